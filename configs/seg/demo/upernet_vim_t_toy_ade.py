# Demo: UperNet + Vim-T (narrowed) on the toy ADE20K data, trained from scratch on a CPU in a few
# minutes (``make demo``; data: ``python tools/make_toy_data.py --out data/toy``).
#
# Inherits the real config (configs/seg/upernet_vim_t_ade20k.py: Vim backbone with the hidden-state
# features, DeconvPyramid, UPerHead + auxiliary FCNHead, AdamW with layer-wise lr decay, mmseg's
# ToyADE20KDataset pipeline/IoUMetric) and swaps only what a 2-core demo needs:
# * data (configs/seg/demo/_toy_ade_data.py, shared with the MambaOut demo): ToyADE20KDataset
#   (5 toy classes) under data/toy/ade, images ~150-260 px, so a 160 crop and a short side of 192
#   replace 512 / 2048x512; no PhotoMetricDistortion (hue is a cue here);
# * model size: 8 Vim blocks of width 96 (Vim-T: 24 x 192), a 64-channel decode head (192) and a
#   32-channel auxiliary head (256);
# * no ImageNet weights (``init_cfg=None``: the demo must run offline), so a from-scratch
#   schedule: 320 iterations, batch 8, lr 1e-3 with 30 warm-up iterations, poly decay to 0;
# * runtime: validation every 160 iterations (mid-way and at the end), a checkpoint every 80
#   (the last 2 kept, written atomically by mmvssm's AtomicCheckpointHook), a log line every 10
#   iterations, no worker processes (2 cores).
_base_ = ['../upernet_vim_t_ade20k.py', './_toy_ade_data.py']
custom_imports = dict(imports=['mmvssm', 'mmvssm.datasets.ade_toy'], allow_failed_imports=False)

# ---- data: configs/seg/demo/_toy_ade_data.py ---------------------------------------------
data_root, img_scale = _base_.toy_ade.data_root, _base_.toy_ade.img_scale
num_classes, crop_size = _base_.toy_ade.num_classes, _base_.toy_ade.crop_size
train_pipeline, test_pipeline = _base_.toy_ade.train_pipeline, _base_.toy_ade.test_pipeline
train_dataloader = _base_.toy_ade.train_dataloader
val_dataloader = test_dataloader = _base_.toy_ade.val_dataloader

# ---- model ---------------------------------------------------------------------------------
embed_dim = 96
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(embed_dim=embed_dim, depth=8, out_indices=(1, 3, 5, 7), drop_path_rate=0.05,
                  init_cfg=None),
    neck=dict(in_channels=embed_dim),
    decode_head=dict(in_channels=[embed_dim] * 4, channels=64, num_classes=num_classes),
    auxiliary_head=dict(in_channels=embed_dim, channels=32, num_classes=num_classes))

# ---- schedule ------------------------------------------------------------------------------
max_iters = 320
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=30, end=max_iters, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=160)

# ---- runtime -------------------------------------------------------------------------------
default_hooks = dict(
    logger=dict(interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=80, max_keep_ckpts=2,
                    save_last=True))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
