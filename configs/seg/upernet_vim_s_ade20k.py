# UperNet 160k, ADE20K 512x512, Vim-S.
# Published (research/anchors.md §1.6, paper Tab. 2): 44.9 mIoU (single scale), 46M params.
# Vim-Ti's setup (upernet_vim_t_ade20k.py) with the Vim-S settings of the released scripts: the
# residual stream as features (``use_residual_as_feature=True``, last level hidden + residual),
# UPerHead with 384 channels, layer-wise lr decay 0.95.
_base_ = ['./upernet_vim_t_ade20k.py']

checkpoint = 'https://huggingface.co/hustvl/Vim-small-midclstok/resolve/main/vim_s_midclstok_80p5acc.pth'  # noqa
embed_dim = 384
model = dict(
    backbone=dict(arch='small', feature_source='residual',
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=embed_dim),
    decode_head=dict(in_channels=[embed_dim] * 4, channels=embed_dim),
    auxiliary_head=dict(in_channels=embed_dim))

optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.95))
