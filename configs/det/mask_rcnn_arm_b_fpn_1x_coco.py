# Mask R-CNN 1x, ARM-B (MambaMLP), COCO, with ViTDet's simple feature pyramid.
# ARM releases no detection code or recipe (research/anchors.md §4.1; its paper reports Mask
# R-CNN at 1024^2, numbers unverified). ARM is MAE-style pretrained and fine-tuned like MAE, so
# this config uses ViTDet's recipe for a MAE ViT-B, in the 1x Mask R-CNN protocol of the other
# families: the last block's map (block 11 of 12), drop path 0.1, SimpleFeaturePyramid (LN, 256
# channels) in place of FPN, AdamW lr 1e-4, weight decay 0.1, layer-wise lr decay 0.7 (ViTDet-B;
# also Vim-B's value).
# Deviations: 12 epochs at batch 16 and (1333, 800) instead of ViTDet's LSJ 1024 / 100 epochs /
# batch 64 (one protocol for all families); fp32 (``--amp`` on GPUs).
_base_ = ['../_base_/det/mask_rcnn_fpn_1x_coco.py']

# The official weights are on https://huggingface.co/OliverRen/ARM (no direct file URL is
# published; anchors §4.3): download the ARM-B fine-tuned checkpoint and point this at it, e.g.
# ``--cfg-options model.backbone.init_cfg.checkpoint=/path/to/arm_base.pth``. Loading is strict,
# so a missing file stops training instead of silently starting from scratch.
checkpoint = 'checkpoints/arm_base_pz16.pth'
model = dict(
    backbone=dict(
        type='ARM',
        arch='base',
        out_indices=(11, ),
        drop_path_rate=0.1,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(
        _delete_=True,
        type='SimpleFeaturePyramid',
        in_channels=768,
        out_channels=256,
        out_strides=(4, 8, 16, 32),
        num_outs=5,
        norm_cfg=dict(type='LN', eps=1e-6)))

optim_wrapper = dict(
    constructor='MambaLayerDecayOptimWrapperConstructor',
    optimizer=dict(lr=1e-4, weight_decay=0.1),
    paramwise_cfg=dict(_delete_=True, layer_decay_rate=0.7))
