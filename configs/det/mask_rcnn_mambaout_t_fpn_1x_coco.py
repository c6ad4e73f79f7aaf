# Mask R-CNN 1x, MambaOut-Tiny, COCO.
# Published (research/anchors.md §3.4): 45.1 box AP / 41.0 mask AP, 43M params, 262 GMACs.
# No official det code; recipe per the paper and the author (MambaOut#251, anchors §3.3): the Swin
# mmdet config (configs/_base_/det/mask_rcnn_fpn_1x_coco.py: AdamW 1e-4, wd 0.05, batch 16,
# 12 epochs, short side 800) + a LayerNorm on each stage output (the backbone's ``out_norm``),
# drop path 0.3 (T) / 0.4 (S) / 0.6 (B), no layer-wise lr decay.
# Deviation: the paper trained in FP16; the config keeps fp32 so it also runs on CPU. Pass
# ``--amp`` to tools/train.py on GPUs for the published setting.
_base_ = ['../_base_/det/mask_rcnn_fpn_1x_coco.py']

# Official ImageNet-1K weights (anchors §3.1), a flat state dict.
checkpoint = 'https://github.com/yuweihao/MambaOut/releases/download/model/mambaout_tiny.pth'
model = dict(
    backbone=dict(
        type='MambaOut',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        out_norm=True,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[96, 192, 384, 576]))
