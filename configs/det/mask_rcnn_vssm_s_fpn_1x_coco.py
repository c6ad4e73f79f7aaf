# Mask R-CNN 1x, VMamba-S [s2l15], COCO.
# Published (research/anchors.md §2.5): 48.7 box AP / 43.7 mask AP, 70M params, 349 GFLOPs
# (paper v4; the README says 384G). Drop path 0.3 as VMamba's small yaml (anchors §2.3).
_base_ = ['./mask_rcnn_vssm_t_fpn_1x_coco.py']

checkpoint = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_small_0229_ckpt_epoch_222.pth'  # noqa
model = dict(
    backbone=dict(arch='small', drop_path_rate=0.3,
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))
