# Mask R-CNN 3x multi-scale, VMamba-T [s1l8], COCO.
# Published (research/anchors.md §2.5): 48.8 box AP / 43.7 mask AP.
# Recipe: configs/_base_/det/mask_rcnn_fpn_ms_3x_coco.py (36 epochs, DETR-style multi-scale).
_base_ = ['../_base_/det/mask_rcnn_fpn_ms_3x_coco.py']

checkpoint = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm1_tiny_0230s_ckpt_epoch_264.pth'  # noqa
model = dict(
    backbone=dict(
        type='VSSM',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[96, 192, 384, 768]))
