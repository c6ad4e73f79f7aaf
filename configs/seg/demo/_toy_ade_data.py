# The toy ADE20K data of the segmentation demos (upernet_vim_t_toy_ade.py,
# upernet_mambaout_t_toy_ade.py); not a model config (the leading underscore: no test or tool
# lists it as one).
#
# ToyADE20KDataset (5 toy classes) under data/toy/ade (``python tools/make_toy_data.py --out
# data/toy``), images ~150-260 px, so a 160 crop and a short side of 192 replace 512 / 2048x512; no
# PhotoMetricDistortion (hue is a cue here); batch 8, no worker processes (2 cores).
#
# Everything sits in one dict, ``toy_ade``: a demo also inherits its real config, which defines
# ``train_dataloader`` etc. itself, and mmengine refuses a key that two bases both define. A demo
# binds the entries to the usual names (merged over the real config's as before):
#     _base_ = ['../upernet_<family>_ade20k.py', './_toy_ade_data.py']
#     data_root, img_scale = _base_.toy_ade.data_root, _base_.toy_ade.img_scale
#     ...
# (``__`` names are this file's own helpers: mmengine drops them from the config.)
__data_root = 'data/toy/ade/ADEChallengeData2016'
__crop_size = (160, 160)
__img_scale = (384, 192)
__train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=__img_scale, ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=__crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
__test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=__img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
toy_ade = dict(
    data_root=__data_root,
    img_scale=__img_scale,
    num_classes=5,
    crop_size=__crop_size,
    train_pipeline=__train_pipeline,
    test_pipeline=__test_pipeline,
    train_dataloader=dict(
        batch_size=8, num_workers=0, persistent_workers=False,
        dataset=dict(type='ToyADE20KDataset', data_root=__data_root, pipeline=__train_pipeline)),
    val_dataloader=dict(
        batch_size=1, num_workers=0, persistent_workers=False,
        dataset=dict(type='ToyADE20KDataset', data_root=__data_root, pipeline=__test_pipeline)),
)
