# Demo: UperNet + MambaOut-T (narrowed) on the toy ADE20K data, trained from scratch on a CPU in a
# few minutes. Same data, optimizer and lr schedule shape as upernet_vim_t_toy_ade.py (see there),
# but 240 iterations, with validation and a checkpoint every 120; the model
# is the real configs/seg/upernet_mambaout_t_ade20k.py (4-stage gated-CNN backbone with a LayerNorm
# on each stage output, UPerHead + auxiliary FCNHead) with:
# * model size: stages of widths 32/64/128/192 and depths 1/1/2/1 (MambaOut-T: 96/192/384/576,
#   3/3/9/3), a 64-channel decode head (512) and a 32-channel auxiliary head (256);
# * no ImageNet weights (``init_cfg=None``), lr 1e-3 (from scratch) with the demo schedule.
_base_ = ['../upernet_mambaout_t_ade20k.py', './_toy_ade_data.py']
custom_imports = dict(imports=['mmvssm', 'mmvssm.datasets.ade_toy'], allow_failed_imports=False)

# ---- data: configs/seg/demo/_toy_ade_data.py ---------------------------------------------
data_root, img_scale = _base_.toy_ade.data_root, _base_.toy_ade.img_scale
num_classes, crop_size = _base_.toy_ade.num_classes, _base_.toy_ade.crop_size
train_pipeline, test_pipeline = _base_.toy_ade.train_pipeline, _base_.toy_ade.test_pipeline
train_dataloader = _base_.toy_ade.train_dataloader
val_dataloader = test_dataloader = _base_.toy_ade.val_dataloader

# ---- model ---------------------------------------------------------------------------------
dims = [32, 64, 128, 192]
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(dims=dims, depths=[1, 1, 2, 1], drop_path_rate=0.05, init_cfg=None),
    decode_head=dict(in_channels=dims, channels=64, num_classes=num_classes),
    auxiliary_head=dict(in_channels=dims[2], channels=32, num_classes=num_classes))

# ---- schedule (upernet_vim_t_toy_ade.py's, shorter) -------------------------------------------
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
