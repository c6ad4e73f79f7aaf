# Mask R-CNN 1x, Vim-Ti, COCO, with ViTDet's simple feature pyramid.
# Vim publishes no Mask R-CNN result (research/anchors.md §1.5-1.6: only Cascade Mask R-CNN,
# ViTDet, LSJ 1024, 45.7 box AP / 39.2 mask AP for Vim-Ti). This config keeps Vim's detection
# model and optimizer and puts them in the 1x Mask R-CNN recipe the other families publish, so
# all families compare on one protocol:
# * backbone: the last block's residual stream (the official ``last_layer_process='add'``), a
#   single stride-16 map, drop path 0.1; position embeddings are resized online to any input
#   size (official: offline to a fixed 1024x1024, square-padded);
# * neck: ViTDet's SimpleFeaturePyramid (x4, x2, x1, /2 + the extra max-pooled level, LayerNorm,
#   256 channels) in place of FPN, as Vim's detection code;
# * optimizer: AdamW lr 1e-4, weight decay 0.1, layer-wise lr decay 0.837 over the 24 blocks
#   (the official ``t_100ep_adj1`` / ``s_100ep`` configs; norms, biases, A_log, D, pos/cls
#   embeddings without weight decay).
# Deviations (and why): Mask R-CNN with mmdet's standard heads instead of Cascade Mask R-CNN with
# ViTDet's LN conv heads (one protocol for all families); 12 epochs, batch 16, single-scale
# (1333, 800) instead of LSJ 1024 for 100 epochs at batch 64 (the 1x protocol), with the official
# lr 1e-4 kept at batch 16 (the 1x protocol's lr), not scaled down to 2.5e-5; no AMP in the
# config (CPU-runnable; ``--amp`` on GPUs).
_base_ = ['../_base_/det/mask_rcnn_fpn_1x_coco.py']

# Official ImageNet-1K weights (anchors §1.7), key 'model' found automatically.
checkpoint = 'https://huggingface.co/hustvl/Vim-tiny-midclstok/resolve/main/vim_t_midclstok_76p1acc.pth'  # noqa
model = dict(
    backbone=dict(
        type='Vim',
        arch='tiny',
        out_indices=(23, ),  # the last block: one stride-16 map, as ViTDet
        feature_source='residual',
        drop_path_rate=0.1,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(
        _delete_=True,
        type='SimpleFeaturePyramid',
        in_channels=192,
        out_channels=256,
        out_strides=(4, 8, 16, 32),
        num_outs=5,  # + stride 64, as the FPN it replaces (RPN anchors at 4..64)
        norm_cfg=dict(type='LN', eps=1e-6)))

optim_wrapper = dict(
    constructor='MambaLayerDecayOptimWrapperConstructor',
    optimizer=dict(lr=1e-4, weight_decay=0.1),
    paramwise_cfg=dict(_delete_=True, layer_decay_rate=0.837))
