# Mask R-CNN 1x, VMamba-T [s1l8] (the paper's VMamba-T), COCO.
# Published (research/anchors.md §2.5): 47.3 box AP / 42.7 mask AP, 50M params, 271 GFLOPs.
# Recipe: configs/_base_/det/mask_rcnn_fpn_1x_coco.py (VMamba's released 1x config: AdamW 1e-4,
# wd 0.05, batch 16, single scale); drop path 0.2 as VMamba's tiny yaml (anchors §2.3).
_base_ = ['../_base_/det/mask_rcnn_fpn_1x_coco.py']

# Official ImageNet-1K weights (anchors §2.7), key 'model' found automatically.
checkpoint = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm1_tiny_0230s_ckpt_epoch_264.pth'  # noqa
model = dict(
    backbone=dict(
        type='VSSM',
        arch='tiny',
        out_indices=(0, 1, 2, 3),  # strides 4/8/16/32, each with its output LayerNorm
        drop_path_rate=0.2,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[96, 192, 384, 768]))
