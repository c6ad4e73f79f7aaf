"""``tools/infer.py`` paints predictions over the input images: one PNG per input (segmentation,
labels blended with the image) / one painted image per input (detection), each of the input's
size; for segmentation different from the input (the label map is always painted)."""
import os.path as osp

import cv2
import numpy as np

import e2e_util as U


def _inputs(root, sub, pattern, n=3):
    folder = osp.join(str(root), 'data', 'toy', *sub)
    return [osp.join(folder, pattern.format(i)) for i in range(1, n + 1)]


def _check(images, out_dir, ext, differs=True):
    for img in images:
        name = osp.splitext(osp.basename(img))[0] + ext
        out = osp.join(str(out_dir), name)
        assert osp.isfile(out), out
        src, painted = cv2.imread(img), cv2.imread(out)
        assert painted is not None and painted.shape == src.shape, (out, painted, src.shape)
        if differs:
            assert np.abs(painted.astype(int) - src.astype(int)).mean() > 1, out


def test_infer_seg(seg_run, toy_root):
    images = _inputs(toy_root, ('ade', 'ADEChallengeData2016', 'images', 'validation'),
                     'ADE_val_{:08d}.jpg')
    out = toy_root / 'vis_seg'
    proc = U.tool('infer.py', U.SEG_DEMO, seg_run['ckpt'], *images, '--out-dir', out,
                  cwd=toy_root)
    assert proc.stdout.count('classes [') == len(images), proc.stdout[-2000:]
    _check(images, out, '.png')


def test_infer_det(det_run, toy_root):
    images = _inputs(toy_root, ('coco', 'val2017'), '{:012d}.jpg')
    out = toy_root / 'vis_det'
    proc = U.tool('infer.py', U.DET_DEMO, det_run['ckpt'], *images, '--out-dir', out,
                  '--score-thr', '0.05', cwd=toy_root)
    assert proc.stdout.count('instance(s)') == len(images), proc.stdout[-2000:]
    _check(images, out, '.jpg', differs=False)  # a weak detector may draw nothing
