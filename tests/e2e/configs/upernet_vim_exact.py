# The seg demo config made bit-for-bit reproducible, for the distributed and resume tests:
# every sample goes through a deterministic pipeline (fixed 96x96 resize, no crop / flip), no
# stochastic layers (drop path 0, dropout 0), GroupNorm instead of (Sync)BN in the neck and heads
# (no per-process batch statistics), a fixed sampler seed. Then one process with batch 2 and two
# processes with batch 1 see the same global batches and compute the same mean loss (mmseg's CE
# averages over all pixels, ignored ones included: equal-size images weigh the same), and a resumed
# run sees the same batches as an uninterrupted one.
_base_ = ['../../../configs/seg/demo/upernet_vim_t_toy_ade.py']

size = (96, 96)
gn = dict(type='GN', num_groups=8, requires_grad=True)
pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='Resize', scale=size, keep_ratio=False),
    dict(type='PackSegInputs'),
]
model = dict(
    data_preprocessor=dict(size=size),
    backbone=dict(drop_path_rate=0.0),
    neck=dict(norm_cfg=gn),
    decode_head=dict(norm_cfg=gn, dropout_ratio=0.0),
    auxiliary_head=dict(norm_cfg=gn, dropout_ratio=0.0))
train_dataloader = dict(batch_size=2, sampler=dict(seed=0), dataset=dict(pipeline=pipeline))
# training only (IterBasedTrainLoop would also validate at the last iteration)
val_dataloader = None
val_cfg = None
val_evaluator = None

max_iters = 12
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=4, end=max_iters, by_epoch=False),
]
train_cfg = dict(max_iters=max_iters)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=4, max_keep_ckpts=1))
