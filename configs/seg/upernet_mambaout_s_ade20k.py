# UperNet 160k, ADE20K 512x512, MambaOut-Small.
# Published (research/anchors.md §3.4): 49.5 mIoU SS / 50.6 MS, 76M params, 1032 GMACs.
_base_ = ['./upernet_mambaout_t_ade20k.py']

checkpoint = 'https://github.com/yuweihao/MambaOut/releases/download/model/mambaout_small.pth'
model = dict(
    backbone=dict(arch='small', drop_path_rate=0.4,
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))
