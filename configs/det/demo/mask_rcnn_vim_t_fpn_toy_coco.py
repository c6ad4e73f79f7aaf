# Demo: Mask R-CNN + Vim-T (narrowed) on the toy COCO data (4 shape classes), trained from scratch
# on a CPU in a few minutes (``make demo``; data: ``python tools/make_toy_data.py --out data/toy``).
#
# Inherits the real config (configs/det/mask_rcnn_vim_t_fpn_1x_coco.py: Vim backbone, last block's
# residual stream, ViTDet SimpleFeaturePyramid, mmdet's Mask R-CNN heads, AdamW with layer-wise lr
# decay, mmdet's CocoDataset + CocoMetric bbox/segm) and swaps only what a 2-core demo needs:
# * data: data/toy/coco, 4 classes (mmvssm.datasets.toy.COCO_TOY_CLASSES), images ~150-260 px, so
#   a short side of 256 replaces (1333, 800);
# * model size: 8 Vim blocks of width 96 (Vim-T: 24 x 192); 64-channel pyramid / RPN / RoI heads
#   (256), 256-d box FCs (1024); fewer proposals and RoI samples (small images, <= 6 objects);
# * no ImageNet weights (``init_cfg=None``: the demo runs offline), so a from-scratch schedule:
#   iteration based, 200 iterations, batch 2, lr 2e-3 with 30 warm-up iterations, poly decay
#   to 0. Mask R-CNN on a plain backbone learns slowly from scratch: after these few CPU minutes
#   it has started to localise (box mAP@0.5 ~0.01, far from useful); the demo shows the full
#   path (train / COCO evaluation / painting), the seg demo shows learning;
# * runtime: validation at the end, a checkpoint every 100 iterations (last 2 kept, written
#   atomically by mmvssm's AtomicCheckpointHook), a log line every 10 iterations, no workers.
_base_ = ['../mask_rcnn_vim_t_fpn_1x_coco.py']

# ---- data ----------------------------------------------------------------------------------
data_root = 'data/toy/coco/'
metainfo = dict(classes=('rectangle', 'triangle', 'ellipse', 'ring'),
                palette=[(220, 20, 60), (0, 130, 60), (0, 0, 142), (250, 170, 30)])
num_classes = 4
img_scale = (384, 256)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_train2017.json',
                 data_prefix=dict(img='train2017/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_val2017.json',
                 data_prefix=dict(img='val2017/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# ---- model ---------------------------------------------------------------------------------
embed_dim = 96
channels = 64
model = dict(
    backbone=dict(embed_dim=embed_dim, depth=8, out_indices=(7, ), drop_path_rate=0.05,
                  init_cfg=None),
    neck=dict(in_channels=embed_dim, out_channels=channels),
    rpn_head=dict(in_channels=channels, feat_channels=channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=channels),
        bbox_head=dict(in_channels=channels, fc_out_channels=256, num_classes=num_classes),
        mask_roi_extractor=dict(out_channels=channels),
        mask_head=dict(in_channels=channels, conv_out_channels=channels,
                       num_classes=num_classes)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300), rcnn=dict(max_per_img=50)))

# ---- schedule ------------------------------------------------------------------------------
max_iters = 200
optim_wrapper = dict(optimizer=dict(lr=2e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=30, end=max_iters, by_epoch=False),
]
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# ---- runtime -------------------------------------------------------------------------------
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=100, max_keep_ckpts=2,
                    save_last=True))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
