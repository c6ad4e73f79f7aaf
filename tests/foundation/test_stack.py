"""The environment really works: mmcv compiled ops on CPU, mmdet / mmseg models from packaged configs."""
import pytest
import torch

from mm_helpers import build_model, det_batch, load_config, seg_batch, train_and_predict

pytest.importorskip('mmcv')


def test_mmcv_nms_hand_computed():
    from mmcv.ops import nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    # IoU(box0, box1) = 81 / (100 + 100 - 81) = 0.68 > 0.5: box1 suppressed.
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    assert torch.allclose(dets[:, 4], torch.tensor([0.9, 0.7]))
    _, keep = nms(boxes, scores, iou_threshold=0.7)  # 0.68 < 0.7: all kept
    assert keep.tolist() == [0, 1, 2]


def test_mmcv_roi_align_hand_computed():
    from mmcv.ops import roi_align
    # f(y, x) = x + 10 y is linear, so bilinear sampling is exact: each output bin equals
    # f at the mean of its sampling points = f at the bin centre.
    ys, xs = torch.meshgrid(torch.arange(8.), torch.arange(8.), indexing='ij')
    feat = (xs + 10 * ys)[None, None]
    rois = torch.tensor([[0., 1., 1., 5., 5.]])  # (batch idx, x1, y1, x2, y2), aligned=True
    out = roi_align(feat, rois, (2, 2), 1.0, 2, 'avg', True)  # scale, sampling, pool, aligned
    # aligned=True shifts by -0.5: box [0.5, 4.5]; bins of size 2 centred at 1.5 and 3.5.
    expect = torch.tensor([[1.5 + 15., 3.5 + 15.], [1.5 + 35., 3.5 + 35.]])
    assert torch.allclose(out[0, 0], expect, atol=1e-5)


def test_mask_rcnn_r50_from_mmdet_base(tmp_path):
    pytest.importorskip('mmdet')
    cfg = load_config("_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']\n"
                      "model = dict(backbone=dict(init_cfg=None))\n", tmp_path)
    assert cfg.model.type == 'MaskRCNN'
    model = build_model(cfg)
    loss, preds = train_and_predict(model, det_batch(96, 128))
    assert loss > 0 and len(preds) == 1 and hasattr(preds[0], 'pred_instances')


def test_upernet_r50_from_mmseg_base(tmp_path):
    pytest.importorskip('mmseg')
    cfg = load_config("_base_ = ['mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py']\n"
                      "norm_cfg = dict(type='BN', requires_grad=True)\n"
                      "model = dict(pretrained=None, backbone=dict(norm_cfg=norm_cfg),\n"
                      "             decode_head=dict(norm_cfg=norm_cfg), auxiliary_head=dict(norm_cfg=norm_cfg),\n"
                      "             data_preprocessor=dict(size=(64, 64)))\n", tmp_path)
    assert cfg.model.decode_head.type == 'UPerHead'
    model = build_model(cfg)
    loss, preds = train_and_predict(model, seg_batch(64, 64, batch_size=2))
    assert loss > 0 and preds[0].pred_sem_seg.data.shape[-2:] == (64, 64)
