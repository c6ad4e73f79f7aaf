# Mask R-CNN + FPN, 1x schedule, COCO instances: what every mmvssm detection config shares.
#
# Published recipe (VMamba's mmdet 3.3 configs, which are Swin's, research/anchors.md §2.4;
# MambaOut used the same Swin recipe, §3.3): AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05, no weight
# decay on norms; linear warm-up over 1000 iterations from 0.001, then x0.1 after epochs 8 and 11
# (12 epochs); 2 images/GPU x 8 GPUs = 16; single-scale Resize(1333, 800) + flip.
#
# A family config sets ``model.backbone`` (the mmdet base's ResNet-50 is deleted here, so no ResNet
# key such as ``depth``, ``norm_eval`` or its torchvision ``init_cfg`` can leak into our backbones)
# and ``model.neck`` (FPN ``in_channels``; plain backbones put an adapter first).
#
# Deviations from the published configs, and why:
# * ``env_cfg.dist_cfg.backend`` stays 'nccl' here, but ``tools/train.py`` / ``tools/test.py``
#   switch it to 'gloo' (and SyncBN to BN) when CUDA is unavailable, so the same config also runs
#   on CPU (1 process or ``tools/dist_train.sh`` with several).
# * The test pipeline is mmdet's: Resize(1333, 800, keep_ratio) without a crop, so any image size
#   is accepted; the data preprocessor pads to a multiple of 32 and the backbones pad internally.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmvssm'], allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True),  # filled in by the family config
    neck=dict(in_channels=[96, 192, 384, 768]))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    # As VMamba's released configs: a substring match on 'norm', so only parameters whose names
    # contain it (the blocks' and out-norms' LayerNorms) get no weight decay; biases, VSSM's
    # A_logs / Ds (flagged _no_weight_decay, which mmengine ignores) and the stem's and
    # downsamples' LayerNorm2d (patch_embed.2 / .7, downsample.3) get it, as in those runs.
    # MambaLayerDecayOptimWrapperConstructor (the Vim / ARM configs) exempts all of them.
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))

# 8 GPUs x 2 images (the mmdet base's batch_size=2); scale lr linearly with --auto-scale-lr.
auto_scale_lr = dict(enable=False, base_batch_size=16)

# Runtime (mmvssm.mm): checkpoints written atomically (the mmdet base's interval etc. are kept),
# and a progress bar over the val / test iterations.
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
custom_hooks = [dict(type='EvalProgressBarHook')]
