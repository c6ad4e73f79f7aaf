# Mask R-CNN 1x, VMamba-B [s2l15], COCO.
# Published (research/anchors.md §2.5): 49.2 box AP / 44.1 mask AP, 108M params, 485 GFLOPs.
# Drop path 0.6 as VMamba's base yaml / builder (anchors §2.3).
_base_ = ['./mask_rcnn_vssm_t_fpn_1x_coco.py']

checkpoint = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_base_0229_ckpt_epoch_237.pth'  # noqa
model = dict(
    backbone=dict(arch='base', drop_path_rate=0.6,
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
