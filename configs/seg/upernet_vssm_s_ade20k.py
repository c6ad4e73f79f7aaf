# UperNet 160k, ADE20K 512x512, VMamba-S [s2l15].
# Published (research/anchors.md §2.5): 50.6 mIoU SS / 51.2 MS, 82M params, 1028 GFLOPs.
_base_ = ['./upernet_vssm_t_ade20k.py']

checkpoint = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_small_0229_ckpt_epoch_222.pth'  # noqa
model = dict(
    backbone=dict(arch='small', drop_path_rate=0.3,
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))
