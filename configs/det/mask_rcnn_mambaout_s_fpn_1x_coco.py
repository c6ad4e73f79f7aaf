# Mask R-CNN 1x, MambaOut-Small, COCO.
# Published (research/anchors.md §3.4): 47.4 box AP / 42.7 mask AP, 65M params, 354 GMACs.
# Drop path: the author says "0.3 or 0.4" for Small (MambaOut#251); 0.4 (its ImageNet value).
_base_ = ['./mask_rcnn_mambaout_t_fpn_1x_coco.py']

checkpoint = 'https://github.com/yuweihao/MambaOut/releases/download/model/mambaout_small.pth'
model = dict(
    backbone=dict(arch='small', drop_path_rate=0.4,
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))
