# UperNet, ADE20K 512x512, 160k iterations: what every mmvssm segmentation config shares.
#
# Published recipe (VMamba's mmseg 1.2 configs, which are Swin's, research/anchors.md §2.4):
# UPerHead (channels 512, pool scales 1/2/3/6) + auxiliary FCNHead (loss weight 0.4) on stage 3,
# SyncBN in the heads; AdamW lr 6e-5, betas (0.9, 0.999), weight decay 0.01, no weight decay on
# norms; linear warm-up over 1500 iterations from 1e-6, then poly (power 1, to 0) until 160k;
# 2 images/GPU x 8 GPUs = 16; train: RandomResize(2048, 512, ratio 0.5-2) + RandomCrop 512
# (cat_max_ratio 0.75) + flip + PhotoMetricDistortion; test: whole image, Resize(2048, 512,
# keep_ratio), i.e. the real aspect ratio (no crop, no sliding window: the backbones pad
# internally, so any size works); multi-scale TTA (0.5-1.75 x flip) with ``tools/test.py --tta``.
#
# A family config sets ``model.backbone`` (the mmseg base's Swin is deleted here, so none of its
# keys leaks into our backbones) and the heads' ``in_channels``.
#
# Deviations from the published configs, and why:
# * ``norm_cfg`` (top level, used by both heads) is SyncBN as published. mmengine's runner turns
#   SyncBN back into BN in non-distributed runs, and ``tools/train.py`` / ``tools/test.py`` swap it
#   for BN whenever CUDA is unavailable (torch's SyncBN cannot sync CPU tensors), so single-process
#   and CPU runs work unchanged. To choose another norm, override the heads' ``norm_cfg``, e.g.
#   ``--cfg-options model.decode_head.norm_cfg.type=GN ...`` (a top-level ``norm_cfg`` override does
#   not reach dicts already built from it).
# * ``dist_cfg.backend`` 'nccl' becomes 'gloo' in the tools when CUDA is unavailable.
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['mmvssm'], allow_failed_imports=False)

norm_cfg = dict(type='SyncBN', requires_grad=True)
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(_delete_=True),  # filled in by the family config
    decode_head=dict(in_channels=[96, 192, 384, 768], channels=512, num_classes=150,
                     norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=384, in_index=2, num_classes=150, norm_cfg=norm_cfg),
    test_cfg=dict(mode='whole'))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    # As VMamba's released configs: a substring match on 'norm', so only parameters whose names
    # contain it (the blocks' and out-norms' LayerNorms) get no weight decay; biases, VSSM's
    # A_logs / Ds (flagged _no_weight_decay, which mmengine ignores) and the stem's and
    # downsamples' LayerNorm2d (patch_embed.2 / .7, downsample.3) get it, as in those runs.
    # MambaLayerDecayOptimWrapperConstructor (the Vim / ARM configs) exempts all of them.
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]

# 8 GPUs x 2 images = 16 (the mmseg base has 4 per GPU); scale lr linearly with --auto-scale-lr.
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader

# Runtime (mmvssm.mm): checkpoints written atomically (the mmseg schedule's interval etc. are
# kept), and a progress bar over the val / test iterations.
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
custom_hooks = [dict(type='EvalProgressBarHook')]
