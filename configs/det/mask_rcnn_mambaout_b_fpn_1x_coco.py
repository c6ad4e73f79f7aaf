# Mask R-CNN 1x, MambaOut-Base, COCO.
# Published (research/anchors.md §3.4): 47.4 box AP / 43.0 mask AP, 100M params, 495 GMACs.
# Drop path 0.6 (author, MambaOut#251).
_base_ = ['./mask_rcnn_mambaout_t_fpn_1x_coco.py']

checkpoint = 'https://github.com/yuweihao/MambaOut/releases/download/model/mambaout_base.pth'
model = dict(
    backbone=dict(arch='base', drop_path_rate=0.6,
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[128, 256, 512, 768]))
