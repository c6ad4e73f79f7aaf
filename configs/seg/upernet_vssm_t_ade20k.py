# UperNet 160k, ADE20K 512x512, VMamba-T [s1l8] (the paper's VMamba-T).
# Published (research/anchors.md §2.5): 47.9 mIoU single-scale / 48.8 multi-scale, 62M params,
# 949 GFLOPs. Recipe: configs/_base_/seg/upernet_160k_ade20k.py (VMamba's released config:
# AdamW 6e-5, wd 0.01, batch 16, 160k, whole-image test); drop path 0.2 (anchors §2.3).
_base_ = ['../_base_/seg/upernet_160k_ade20k.py']

checkpoint = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm1_tiny_0230s_ckpt_epoch_264.pth'  # noqa
model = dict(
    backbone=dict(
        type='VSSM',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
