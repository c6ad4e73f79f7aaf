# UperNet 160k, ADE20K 512x512, MambaOut-Base.
# Published (research/anchors.md §3.4): 49.6 mIoU SS / 51.0 MS, 112M params, 1178 GMACs.
_base_ = ['./upernet_mambaout_t_ade20k.py']

checkpoint = 'https://github.com/yuweihao/MambaOut/releases/download/model/mambaout_base.pth'
model = dict(
    backbone=dict(arch='base', drop_path_rate=0.6,
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[128, 256, 512, 768]),
    auxiliary_head=dict(in_channels=512))
