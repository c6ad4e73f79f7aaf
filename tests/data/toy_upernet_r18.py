# A tiny UperNet on the toy ADE20K data (mmvssm/datasets/toy.py), for smoke tests of
# tools/train.py, tools/test.py and tools/infer.py on CPU: the shared 160k base with a randomly
# initialised, narrow ResNet-18 and 64-channel heads, 4 iterations.
# Run from a folder holding data/toy/ade (``python tools/make_toy_data.py --out data/toy``).
_base_ = ['../../configs/_base_/seg/upernet_160k_ade20k.py']
custom_imports = dict(imports=['mmvssm', 'mmvssm.datasets.ade_toy'], allow_failed_imports=False)

data_root = 'data/toy/ade/ADEChallengeData2016'
crop_size = (128, 128)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(type='ResNetV1c', depth=18, base_channels=16, stem_channels=16,
                  out_indices=(0, 1, 2, 3), norm_cfg=dict(type='SyncBN', requires_grad=True),
                  init_cfg=None),
    decode_head=dict(in_channels=[16, 32, 64, 128], channels=64, num_classes=5),
    auxiliary_head=dict(in_channels=64, channels=32, num_classes=5))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(256, 128), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
_loader = dict(num_workers=0, persistent_workers=False)
train_dataloader = dict(
    batch_size=2, **_loader,
    dataset=dict(type='ToyADE20KDataset', data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, **_loader,
    dataset=dict(type='ToyADE20KDataset', data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

train_cfg = dict(max_iters=4, val_interval=2)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
