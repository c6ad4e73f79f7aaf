"""Toy COCO / ADE20K data (mmvssm/datasets/toy.py, tools/make_toy_data.py).

The files must be read unchanged by pycocotools, mmdet's CocoDataset / CocoMetric
and mmseg's ADE20KDataset (through ToyADE20KDataset) / IoUMetric.
"""
import filecmp
import json
import os
import os.path as osp
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from mmvssm.datasets import toy
from mmvssm.datasets.toy import (ADE_TOY_CLASSES, COCO_TOY_CLASSES,
                                 COCO_TOY_METAINFO, make_ade, make_coco)

# pycocotools' own decode under numpy 2; mmseg's note on LoadAnnotations'
# reduce_zero_label (its ADE20K configs still pass it)
pytestmark = [
    pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning'),
    pytest.mark.filterwarnings('ignore:`reduce_zero_label` will be deprecated'),
]

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
K = len(ADE_TOY_CLASSES)


@pytest.fixture(scope='module')
def toy_root(tmp_path_factory):
    """The default-sized datasets (120 train / 30 val each), generated once."""
    root = str(tmp_path_factory.mktemp('toy'))
    t0, c0 = time.perf_counter(), time.process_time()
    coco = make_coco(root, seed=0)
    ade = make_ade(root, seed=0)
    return dict(root=root, coco=coco, ade=ade,
                seconds=time.perf_counter() - t0,
                cpu_seconds=time.process_time() - c0)


def _has_hole(mask):
    """Whether ``mask`` has background pixels not connected to the border."""
    bg = np.ascontiguousarray(np.pad(1 - mask, 1, constant_values=1), np.uint8)
    cv2.floodFill(bg, None, (0, 0), 0)
    return bool(bg.any())


def _files(folder):
    out = []
    for d, _, names in os.walk(folder):
        out += [osp.relpath(osp.join(d, n), folder) for n in names]
    return sorted(out)


# --------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------
def test_default_generation_is_fast_and_complete(toy_root):
    # ~4 s on an idle 2-core machine; CPU time is robust to a busy machine
    assert toy_root['cpu_seconds'] < 15, toy_root['cpu_seconds']
    assert toy_root['seconds'] < 60, toy_root['seconds']
    assert not toy_root['coco']['skipped'] and not toy_root['ade']['skipped']
    c = osp.join(toy_root['root'], 'coco')
    assert len(os.listdir(osp.join(c, 'train2017'))) == toy.DEFAULT_NUM_TRAIN
    assert len(os.listdir(osp.join(c, 'val2017'))) == toy.DEFAULT_NUM_VAL
    a = toy_root['ade']['data_root']
    assert a.endswith('ADEChallengeData2016')
    for d, n in (('training', toy.DEFAULT_NUM_TRAIN),
                 ('validation', toy.DEFAULT_NUM_VAL)):
        assert len(os.listdir(osp.join(a, 'images', d))) == n
        assert len(os.listdir(osp.join(a, 'annotations', d))) == n


def test_sizes_vary_and_are_not_multiples_of_32(toy_root):
    coco = json.load(open(toy_root['coco']['ann_files']['train']))
    ws = [im['width'] for im in coco['images']]
    hs = [im['height'] for im in coco['images']]
    assert all(w % 32 and h % 32 for w, h in zip(ws, hs))
    assert min(ws) >= 150 and max(ws) <= 260 and len(set(ws)) > 20
    assert len(set(zip(ws, hs))) > 50
    a = toy_root['ade']['data_root']
    for name in os.listdir(osp.join(a, 'annotations', 'validation')):
        lab = cv2.imread(osp.join(a, 'annotations', 'validation', name),
                         cv2.IMREAD_UNCHANGED)
        assert lab.shape[0] % 32 and lab.shape[1] % 32


def test_deterministic_per_seed(tmp_path):
    roots = {}
    for name, seed, n_train in (('a', 0, 3), ('b', 0, 3), ('c', 1, 3),
                                ('d', 0, 5)):
        roots[name] = str(tmp_path / name)
        make_coco(roots[name], seed=seed, num_train=n_train, num_val=2)
        make_ade(roots[name], seed=seed, num_train=n_train, num_val=2)
    files = _files(roots['a'])
    assert files == _files(roots['b']) and len(files) == (3 + 2) + 2 + 1 + (3 + 2) * 2 + 1
    _, mismatch, errors = filecmp.cmpfiles(roots['a'], roots['b'], files,
                                           shallow=False)
    assert not mismatch and not errors
    # another seed: every image and annotation file differs
    _, mismatch, errors = filecmp.cmpfiles(roots['a'], roots['c'], files,
                                           shallow=False)
    assert not errors and len(mismatch) == len(files)
    # each image has its own stream: more training images leave val unchanged
    val = [f for f in files if 'val' in f and 'manifest' not in f]
    assert len(val) == 2 + 1 + 4
    _, mismatch, _ = filecmp.cmpfiles(roots['a'], roots['d'], val, shallow=False)
    assert not mismatch


def test_manifest_skip_and_force(tmp_path):
    root = str(tmp_path)
    first = make_coco(root, seed=3, num_train=2, num_val=1)
    assert not first['skipped']
    again = make_coco(root, seed=3, num_train=2, num_val=1)
    assert again['skipped'] and again['stats'] == json.loads(
        json.dumps(first['stats']))
    assert not make_coco(root, seed=3, num_train=2, num_val=1, force=True)['skipped']
    # a different request regenerates (and removes stale files)
    other = make_coco(root, seed=3, num_train=1, num_val=1)
    assert not other['skipped']
    assert len(os.listdir(osp.join(root, 'coco', 'train2017'))) == 1
    # missing files are regenerated even with a matching manifest
    os.remove(osp.join(root, 'coco', 'train2017', '000000000001.jpg'))
    assert not make_coco(root, seed=3, num_train=1, num_val=1)['skipped']
    assert not make_ade(root, seed=3, num_train=1, num_val=1)['skipped']
    assert make_ade(root, seed=3, num_train=1, num_val=1)['skipped']
    with pytest.raises(ValueError):
        make_ade(root, seed=-1)


def test_real_datasets_are_never_replaced(tmp_path):
    """A folder with data but no toy manifest (e.g. the real COCO in data/coco) is refused,
    --force included; an interrupted toy generation is regenerated."""
    root = str(tmp_path)
    real_img = tmp_path / 'coco' / 'train2017' / 'real.jpg'
    real_img.parent.mkdir(parents=True)
    real_img.write_bytes(b'real')
    for force in (False, True):
        with pytest.raises(FileExistsError, match='real dataset'):
            make_coco(root, num_train=1, num_val=1, force=force)
    assert real_img.read_bytes() == b'real'
    real_ann = tmp_path / 'ade' / 'ADEChallengeData2016' / 'annotations' / 'training' / 'a.png'
    real_ann.parent.mkdir(parents=True)
    real_ann.write_bytes(b'real')
    with pytest.raises(FileExistsError, match='real dataset'):
        make_ade(root, num_train=1, num_val=1, force=True)
    assert real_ann.read_bytes() == b'real'
    cli = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'make_toy_data.py'), '--out',
                          root, '--only', 'coco', '--force'], capture_output=True, text=True)
    assert cli.returncode == 2 and 'real dataset' in cli.stderr and real_img.exists()
    assert 'Traceback' not in cli.stderr
    # an interrupted generation (manifest without stats, files missing) is ours: regenerated
    other = tmp_path / 'toy'
    make_coco(str(other), num_train=2, num_val=1)
    man = other / 'coco' / 'toy_manifest.json'
    partial = json.load(open(man))
    del partial['stats']
    json.dump(partial, open(man, 'w'))
    assert not make_coco(str(other), num_train=2, num_val=1)['skipped']
    assert make_coco(str(other), num_train=2, num_val=1)['skipped']


def test_cli(tmp_path):
    cmd = [sys.executable, osp.join(REPO, 'tools', 'make_toy_data.py'), '--out',
           str(tmp_path), '--num-train', '2', '--num-val', '1', '--seed', '5']
    out = subprocess.run(cmd + ['--only', 'coco'], capture_output=True,
                         text=True, check=True).stdout
    assert '[coco]' in out and 'wrote' in out and '[ade]' not in out
    assert osp.isfile(tmp_path / 'coco' / 'annotations' / 'instances_val2017.json')
    assert not (tmp_path / 'ade').exists()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert 'skipped' in out.split('[ade]')[0] and 'wrote' in out.split('[ade]')[1]
    manifest = json.load(open(tmp_path / 'ade' / 'toy_manifest.json'))
    assert manifest['seed'] == 5 and manifest['num_train'] == 2
    assert manifest['version'] == toy.GENERATOR_VERSION


# --------------------------------------------------------------------------
# COCO format
# --------------------------------------------------------------------------
def test_coco_annotations_consistent(toy_root):
    pytest.importorskip('pycocotools')
    from pycocotools.coco import COCO
    root = osp.join(toy_root['root'], 'coco')
    classes_seen = set()
    for split, img_dir in (('train', 'train2017'), ('val', 'val2017')):
        coco = COCO(toy_root['coco']['ann_files'][split])
        cats = coco.loadCats(coco.getCatIds())
        assert [c['name'] for c in cats] == list(COCO_TOY_CLASSES)
        assert [c['id'] for c in cats] == [1, 2, 3, 4]
        n_crowd = n_holes = n_multi = n_rings = 0
        for img_id, info in coco.imgs.items():
            img = cv2.imread(osp.join(root, img_dir, info['file_name']))
            assert img.shape == (info['height'], info['width'], 3)
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
            non_crowd = [a for a in anns if not a['iscrowd']]
            assert 1 <= len(non_crowd) <= 6
            covered = np.zeros(img.shape[:2], np.int32)
            for a in anns:
                m = coco.annToMask(a)
                assert m.shape == img.shape[:2]
                assert m.sum() == a['area'] > 0
                ys, xs = np.nonzero(m)
                assert a['bbox'] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                     ys.max() - ys.min() + 1]
                covered += m
                classes_seen.add(a['category_id'])
                if a['iscrowd']:
                    n_crowd += 1
                    assert isinstance(a['segmentation']['counts'], str)
                else:
                    polys = a['segmentation']
                    assert isinstance(polys, list) and polys
                    assert all(len(p) >= 6 and len(p) % 2 == 0 for p in polys)
                    n_multi += len(polys) > 1
                    if a['category_id'] == COCO_TOY_CLASSES.index('ring') + 1:
                        n_rings += 1
                        n_holes += _has_hole(m)
            # masks are the visible parts: no pixel belongs to two objects
            assert covered.max() <= 1
        assert n_crowd >= 1 and n_multi >= 1
        # polygons keep the rings' holes (keyhole polygons, even-odd fill)
        assert n_holes >= 0.7 * n_rings, (n_holes, n_rings)
    assert classes_seen == {1, 2, 3, 4}


def test_coco_stats_balanced(toy_root):
    st = toy_root['coco']['stats']['train']
    counts = np.array(list(st['per_class'].values()))
    assert counts.min() > 0.6 * counts.mean()
    assert st['instances_per_image']['max'] == 6
    assert st['instances_per_image']['mean'] > 3
    assert st['area_bins']['small'] > 0 and st['area_bins']['medium'] > 0


def test_mmdet_coco_dataset_and_metric(toy_root):
    pytest.importorskip('mmdet')
    import torch
    from mmdet.datasets import CocoDataset
    from mmdet.evaluation import CocoMetric
    from mmengine.registry import init_default_scope
    from pycocotools import mask as mask_utils
    init_default_scope('mmdet')  # transforms by name, without importing mmdet.models

    data_root = toy_root['coco']['data_root']
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(1333, 800), keep_ratio=True),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
        dict(type='PackDetInputs',
             meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                        'scale_factor'))
    ]
    ds = CocoDataset(data_root=data_root,
                     ann_file='annotations/instances_val2017.json',
                     data_prefix=dict(img='val2017/'), metainfo=COCO_TOY_METAINFO,
                     test_mode=True, pipeline=test_pipeline)
    assert len(ds) == toy.DEFAULT_NUM_VAL
    assert ds.metainfo['classes'] == COCO_TOY_CLASSES
    item = ds[0]
    sample = item['data_samples']
    assert item['inputs'].shape[0] == 3
    assert sample.gt_instances.bboxes.shape[0] == len(sample.gt_instances.masks) > 0
    assert sample.gt_instances.labels.max() < len(COCO_TOY_CLASSES)

    train = CocoDataset(
        data_root=data_root, ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'), metainfo=COCO_TOY_METAINFO,
        filter_cfg=dict(filter_empty_gt=True, min_size=1),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', with_bbox=True, with_mask=True,
                       poly2mask=False),
                  dict(type='RandomFlip', prob=1.0),
                  dict(type='PackDetInputs')])
    assert len(train) == toy.DEFAULT_NUM_TRAIN
    gt = train[1]['data_samples'].gt_instances
    assert len(gt.masks) == len(gt.bboxes) > 0

    # CocoMetric on the ground truth as predictions: bbox and segm mAP 1.0
    metric = CocoMetric(ann_file=osp.join(data_root,
                                          'annotations/instances_val2017.json'),
                        metric=['bbox', 'segm'])
    metric.dataset_meta = ds.metainfo
    from pycocotools.coco import COCO
    coco = COCO(osp.join(data_root, 'annotations/instances_val2017.json'))
    results = []
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[info['img_id']]))
                if not a['iscrowd']]
        h, w = info['height'], info['width']
        boxes = torch.tensor([[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                               a['bbox'][1] + a['bbox'][3]] for a in anns])
        masks = torch.from_numpy(np.stack([
            mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(
                a['segmentation'], h, w))) for a in anns])).bool()
        labels = torch.tensor([ds.cat2label[a['category_id']] for a in anns])
        results.append(dict(img_id=info['img_id'], ori_shape=(h, w),
                            pred_instances=dict(bboxes=boxes, labels=labels,
                                                scores=torch.ones(len(anns)),
                                                masks=masks)))
    metric.process({}, results)
    res = metric.compute_metrics(metric.results)
    assert res['bbox_mAP'] == pytest.approx(1.0)
    assert res['segm_mAP'] == pytest.approx(1.0)


# --------------------------------------------------------------------------
# ADE20K format
# --------------------------------------------------------------------------
def test_ade_files(toy_root):
    a = toy_root['ade']['data_root']
    for d, prefix in (('training', 'ADE_train_'), ('validation', 'ADE_val_')):
        imgs = sorted(os.listdir(osp.join(a, 'images', d)))
        anns = sorted(os.listdir(osp.join(a, 'annotations', d)))
        assert [f[:-4] for f in imgs] == [f[:-4] for f in anns]
        assert all(f.startswith(prefix) and f.endswith('.jpg') for f in imgs)
        seen = np.zeros(K + 1, bool)
        for fi, fa in zip(imgs, anns):
            img = cv2.imread(osp.join(a, 'images', d, fi))
            lab = cv2.imread(osp.join(a, 'annotations', d, fa), cv2.IMREAD_UNCHANGED)
            assert lab.dtype == np.uint8 and lab.ndim == 2
            assert lab.shape == img.shape[:2]
            assert lab.max() <= K
            seen[np.unique(lab)] = True
        assert seen.all()
    st = toy_root['ade']['stats']['train']['pixel_fraction']
    assert all(v > 0.02 for v in st.values()), st


def test_mmseg_ade_dataset_and_metric(toy_root):
    pytest.importorskip('mmseg')
    import torch
    from mmengine.structures import PixelData
    from mmseg.datasets import ADE20KDataset
    from mmseg.evaluation import IoUMetric
    from mmseg.structures import SegDataSample
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    from mmvssm.datasets.ade_toy import ToyADE20KDataset
    init_default_scope('mmseg')  # transforms by name, without importing mmseg.models
    assert DATASETS.get('ToyADE20KDataset') is ToyADE20KDataset

    kw = dict(data_root=toy_root['ade']['data_root'],
              data_prefix=dict(img_path='images/validation',
                               seg_map_path='annotations/validation'),
              pipeline=[dict(type='LoadImageFromFile'),
                        dict(type='Resize', scale=(512, 256), keep_ratio=True),
                        dict(type='LoadAnnotations', reduce_zero_label=True),
                        dict(type='PackSegInputs')])  # mmseg's ADE20K test pipeline
    # why the subclass: a metainfo override on ADE20KDataset builds a label map
    # from ADE20K's 150 indices that would send every toy label to ignore.
    plain = ADE20KDataset(metainfo=dict(classes=ADE_TOY_CLASSES), **kw)
    assert plain.label_map is not None

    ds = DATASETS.build(dict(type='ToyADE20KDataset', **kw))
    assert ds.label_map is None and ds.reduce_zero_label
    assert ds.metainfo['classes'] == ADE_TOY_CLASSES
    assert len(ds) == toy.DEFAULT_NUM_VAL
    for info in ds.data_list:
        assert osp.basename(info['img_path'])[:-4] == \
            osp.basename(info['seg_map_path'])[:-4]
    values = set()
    for i in range(5):
        item = ds[i]
        seg = item['data_samples'].gt_sem_seg.data
        assert tuple(seg.shape[-2:]) == item['data_samples'].ori_shape
        assert max(item['inputs'].shape[-2:]) == 512 or \
            min(item['inputs'].shape[-2:]) == 256
        values |= set(torch.unique(seg).tolist())
    assert values <= set(range(K)) | {255} and 255 in values and len(values) > 3

    # IoUMetric on the ground truth as predictions: mIoU 100
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = ds.metainfo
    samples = []
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        lab = cv2.imread(info['seg_map_path'], cv2.IMREAD_UNCHANGED).astype(np.int64)
        lab = np.where(lab == 0, 255, lab - 1)  # reduce_zero_label
        gt = torch.from_numpy(lab)[None]
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=gt)
        s.pred_sem_seg = PixelData(data=gt.clamp(max=K - 1))
        samples.append(s.to_dict())
    metric.process({}, samples)
    res = metric.compute_metrics(metric.results)
    assert res['mIoU'] == pytest.approx(100.0)
