# UperNet 160k, ADE20K 512x512, ARM-B (MambaMLP).
# ARM releases no segmentation code or recipe (research/anchors.md §4.1; its paper reports UperNet
# at 512^2, numbers unverified). ARM is MAE-style pretrained and fine-tuned like MAE (layer decay
# 0.65, anchors §4.1), so this config uses MAE's / BEiT's UperNet recipe for ViT-B: the maps of
# blocks 3/5/7/11 (mmseg's MAE / BEiT UperNet configs; 2/5/8/11 in mmvssm before 8287b26) through the fpn1..fpn4 deconvolution pyramid, UPerHead with 768 channels,
# AdamW lr 1e-4, weight decay 0.05, layer-wise lr decay 0.65, drop path 0.1, batch 16, 160k
# iterations, 1500 warm-up iterations; whole-image test as the other configs.
_base_ = ['../_base_/seg/upernet_160k_ade20k.py']

# The official weights are on https://huggingface.co/OliverRen/ARM (no direct file URL is
# published; anchors §4.3): download the ARM-B checkpoint and point this at it, e.g.
# ``--cfg-options model.backbone.init_cfg.checkpoint=/path/to/arm_base.pth``. Loading is strict,
# so a missing file stops training instead of silently starting from scratch.
checkpoint = 'checkpoints/arm_base_pz16.pth'
embed_dim = 768
model = dict(
    backbone=dict(
        type='ARM',
        arch='base',
        out_indices=(3, 5, 7, 11),
        drop_path_rate=0.1,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    # SyncBN as the heads (published UperNet setting); BN in single-process / CPU runs
    neck=dict(type='DeconvPyramid', in_channels=embed_dim,
              norm_cfg=dict(type='SyncBN', requires_grad=True)),
    decode_head=dict(in_channels=[embed_dim] * 4, channels=embed_dim),
    auxiliary_head=dict(in_channels=embed_dim))

optim_wrapper = dict(
    constructor='MambaLayerDecayOptimWrapperConstructor',
    optimizer=dict(lr=1e-4, weight_decay=0.05),
    paramwise_cfg=dict(_delete_=True, layer_decay_rate=0.65))
