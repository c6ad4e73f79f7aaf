# Demo: UperNet + MambaOut-T (narrowed) on the toy ADE20K data, trained from scratch on a CPU in a
# few minutes. Same data, schedule and runtime as upernet_vim_t_toy_ade.py (see there); the model
# is the real configs/seg/upernet_mambaout_t_ade20k.py (4-stage gated-CNN backbone with a LayerNorm
# on each stage output, UPerHead + auxiliary FCNHead) with:
# * model size: stages of widths 32/64/128/192 and depths 1/1/2/1 (MambaOut-T: 96/192/384/576,
#   3/3/9/3), 64-channel heads (512);
# * no ImageNet weights (``init_cfg=None``), lr 1e-3 (from scratch) with the demo schedule.
_base_ = ['../upernet_mambaout_t_ade20k.py']
custom_imports = dict(imports=['mmvssm', 'mmvssm.datasets.ade_toy'], allow_failed_imports=False)

# ---- data (as upernet_vim_t_toy_ade.py) ------------------------------------------------------
data_root = 'data/toy/ade/ADEChallengeData2016'
num_classes = 5
crop_size = (160, 160)
img_scale = (384, 192)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=img_scale, ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(type='ToyADE20KDataset', data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(type='ToyADE20KDataset', data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

# ---- model ---------------------------------------------------------------------------------
dims = [32, 64, 128, 192]
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(dims=dims, depths=[1, 1, 2, 1], drop_path_rate=0.05, init_cfg=None),
    decode_head=dict(in_channels=dims, channels=64, num_classes=num_classes),
    auxiliary_head=dict(in_channels=dims[2], channels=32, num_classes=num_classes))

# ---- schedule (as upernet_vim_t_toy_ade.py) --------------------------------------------------
max_iters = 240
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=30, end=max_iters, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=120)

# ---- runtime -------------------------------------------------------------------------------
default_hooks = dict(
    logger=dict(interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=120, max_keep_ckpts=2,
                    save_last=True))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
