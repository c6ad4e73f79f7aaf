# A tiny Mask R-CNN on the toy COCO data (mmvssm/datasets/toy.py), for smoke tests of
# tools/train.py, tools/test.py and tools/infer.py on CPU: the shared 1x base with a randomly
# initialised, narrow ResNet-18 instead of an mmvssm backbone (fast, and independent of them).
# Run from a folder holding data/toy/coco (``python tools/make_toy_data.py --out data/toy``).
_base_ = ['../../configs/_base_/det/mask_rcnn_fpn_1x_coco.py']

data_root = 'data/toy/coco/'
metainfo = dict(classes=('rectangle', 'triangle', 'ellipse', 'ring'),
                palette=[(220, 20, 60), (0, 130, 60), (0, 0, 142), (250, 170, 30)])

model = dict(
    backbone=dict(type='ResNet', depth=18, base_channels=16, num_stages=4,
                  out_indices=(0, 1, 2, 3), norm_cfg=dict(type='BN', requires_grad=True),
                  init_cfg=None),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=128, num_classes=4),
        mask_roi_extractor=dict(out_channels=64),
        mask_head=dict(in_channels=64, conv_out_channels=64, num_classes=4)),
    # fewer proposals / sampled RoIs (<= 6 objects per toy image; the box head's CPU cost)
    train_cfg=dict(rpn_proposal=dict(nms_pre=500, max_per_img=200),
                   rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=100)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(256, 256), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 256), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
_loader = dict(num_workers=0, persistent_workers=False)
train_dataloader = dict(
    batch_size=2, **_loader,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_train2017.json',
                 data_prefix=dict(img='train2017/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, **_loader,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_val2017.json',
                 data_prefix=dict(img='val2017/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

max_epochs = 1
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
