# Mask R-CNN 3x multi-scale, VMamba-S [s2l15], COCO.
# Published (research/anchors.md §2.5): 49.9 box AP / 44.2 mask AP.
_base_ = ['./mask_rcnn_vssm_t_fpn_ms_3x_coco.py']

checkpoint = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_small_0229_ckpt_epoch_222.pth'  # noqa
model = dict(
    backbone=dict(arch='small', drop_path_rate=0.3,
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))
