# Mask R-CNN 1x, Vim-S, COCO, with ViTDet's simple feature pyramid: Vim-Ti's recipe
# (mask_rcnn_vim_t_fpn_1x_coco.py; layer decay 0.837 as the official ``s_100ep`` config).
_base_ = ['./mask_rcnn_vim_t_fpn_1x_coco.py']

checkpoint = 'https://huggingface.co/hustvl/Vim-small-midclstok/resolve/main/vim_s_midclstok_80p5acc.pth'  # noqa
model = dict(
    backbone=dict(arch='small', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=384))
