# UperNet 160k, ADE20K 512x512, VMamba-B [s2l15].
# Published (research/anchors.md §2.5): 51.0 mIoU SS / 51.6 MS, 122M params, 1170 GFLOPs.
_base_ = ['./upernet_vssm_t_ade20k.py']

checkpoint = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_base_0229_ckpt_epoch_237.pth'  # noqa
model = dict(
    backbone=dict(arch='base', drop_path_rate=0.6,
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
