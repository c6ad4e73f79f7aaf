# UperNet 160k, ADE20K 512x512, MambaOut-Tiny.
# Published (research/anchors.md §3.4): 47.4 mIoU SS / 48.6 MS, 54M params, 938 GMACs.
# No official seg code; the paper (§4.4, anchors §3.3): the Swin mmseg config
# (configs/_base_/seg/upernet_160k_ade20k.py) with AdamW lr 1e-4 (not Swin's 6e-5), batch 16,
# 160k iterations, FP16, a LayerNorm on each stage output (the backbone's ``out_norm``); drop
# path 0.3 / 0.4 / 0.6 (T / S / B) as the author's detection setting (MambaOut#251; no seg value
# was given); weight decay 0.01 is the Swin config's (not stated by the paper).
# Deviation: fp32 in the config so it also runs on CPU; pass ``--amp`` on GPUs.
_base_ = ['../_base_/seg/upernet_160k_ade20k.py']

checkpoint = 'https://github.com/yuweihao/MambaOut/releases/download/model/mambaout_tiny.pth'
model = dict(
    backbone=dict(
        type='MambaOut',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        out_norm=True,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[96, 192, 384, 576]),
    auxiliary_head=dict(in_channels=384))

optim_wrapper = dict(optimizer=dict(lr=1e-4))
