"""Deterministic toy datasets in the exact on-disk formats of COCO and ADE20K.

Plain numpy + OpenCV (+ pycocotools for the COCO masks); no mmdet / mmseg
import, so the real ``mmdet.datasets.CocoDataset`` + ``CocoMetric`` and
``mmseg.datasets.ADE20KDataset`` + ``IoUMetric`` read the result unchanged.
The command line wrapper is ``tools/make_toy_data.py``.

Layout written by :func:`make_coco` / :func:`make_ade` under ``root``::

    root/coco/train2017/000000000001.jpg ...
    root/coco/val2017/000000000001.jpg ...
    root/coco/annotations/instances_{train,val}2017.json
    root/coco/toy_manifest.json
    root/ade/ADEChallengeData2016/images/{training,validation}/ADE_{train,val}_00000001.jpg
    root/ade/ADEChallengeData2016/annotations/{training,validation}/ADE_{train,val}_00000001.png
    root/ade/toy_manifest.json

Determinism: image ``i`` of split ``s`` is drawn from its own generator
``SeedSequence([seed, dataset, split, i])``, so a seed always gives
byte-identical files (same OpenCV / libjpeg build), and changing ``num_train``
leaves the validation images unchanged. Image sides are drawn uniformly from
[150, 260] and redrawn when a multiple of 32.

COCO toy (instance detection / segmentation), :data:`COCO_TOY_CLASSES`
    ``rectangle`` (rotated, aspect 0.35-1), ``triangle`` (irregular),
    ``ellipse`` (aspect 0.4-1), ``ring`` (elliptic annulus; the hole shows what
    lies beneath). 2-6 objects per image, characteristic radius log-uniform in
    [7, 0.33 * short side], centres anywhere in the central 90% (so objects may
    be cut by the border), class drawn uniformly. Fills are solid / stripes /
    checker / smooth noise / gradient with shading; colours are class-biased
    (hue centre per class, std ~36 degrees, 25% fully random hue) so colour
    helps but does not decide the class. Backgrounds: two-colour gradient +
    stripes + blotches + pixel noise + a few clutter lines/arcs. Objects are
    painted in order, later ones occlude earlier ones; every mask is the
    *visible* part.

    Annotation policy:

    * fully occluded objects are dropped;
    * objects with a visible area < 20 px or < 25% of their un-occluded area
      become ``iscrowd=1`` (COCO's ignore regions: neither rewarded nor
      penalised by ``CocoMetric``, ignored by mmdet in training), stored as
      compressed RLE (``counts`` a str) like the crowd regions of COCO;
    * all other objects are ``iscrowd=0`` with **polygon** segmentation (so
      ``LoadAnnotations(poly2mask=False)`` works too): contours of the visible
      mask traced at 4x resolution, so that pycocotools rasterises them back to
      exactly the visible pixels. A fragmented visible region gives several
      polygons (COCO's union); holes (the ring's, or an object seen through a
      ring) are cut in with a zero-width "keyhole" bridge (pycocotools fills
      with the even-odd rule, so the bridge cancels).

    ``area`` and ``bbox`` ([x, y, w, h], w = x_max - x_min + 1) are computed from
    the rasterised segmentation itself, so ``annToMask(ann).sum() == area``.

ADE toy (semantic segmentation), :data:`ADE_TOY_CLASSES`, label PNG values
    (reduce-zero-label convention: 0 = other, ignored after reduction):

    * 0 ``other``: walls, buildings (with windows), dirt / sand ground;
    * 1 ``sky``: vertical gradient band above a tilted horizon, clouds; 25% grey
      (overcast), 10% dusk (blue to orange);
    * 2 ``grass``: green to yellow (dry), vertically streaked high-frequency
      texture (dirt: brownish, isotropic grain);
    * 3 ``road``: grey asphalt trapezoid towards a vanishing point, dashed
      lane mark;
    * 4 ``car``: rounded body + cabin + windows + dark wheels, any colour,
      size by perspective;
    * 5 ``person``: head + torso + arms + legs, random clothes, size by
      perspective.

    Cars and persons are drawn far-to-near (occlusion). A per-image colour
    jitter (hue, saturation, brightness) and pixel noise keep a pure colour
    lookup from being perfect.
"""
import json
import math
import os
import os.path as osp
import shutil
import time
from typing import Dict, List, Tuple

import cv2
import numpy as np

GENERATOR_NAME = 'mmvssm.datasets.toy'
GENERATOR_VERSION = 1

COCO_TOY_CLASSES = ('rectangle', 'triangle', 'ellipse', 'ring')
# RGB, only for visualisation
COCO_TOY_PALETTE = [(220, 20, 60), (0, 130, 60), (0, 0, 142), (250, 170, 30)]
COCO_TOY_METAINFO = dict(classes=COCO_TOY_CLASSES, palette=COCO_TOY_PALETTE)

ADE_TOY_CLASSES = ('sky', 'grass', 'road', 'car', 'person')
# RGB, ADE20K's own colours for these class names
ADE_TOY_PALETTE = [[6, 230, 230], [4, 250, 7], [140, 140, 140],
                   [0, 102, 200], [150, 5, 61]]
ADE_TOY_METAINFO = dict(classes=ADE_TOY_CLASSES, palette=ADE_TOY_PALETTE)

DEFAULT_NUM_TRAIN = 120
DEFAULT_NUM_VAL = 30
MIN_SIDE, MAX_SIDE = 150, 260
JPEG_QUALITY = 90

COCO_SPLITS = (('train', 'train2017'), ('val', 'val2017'))
ADE_SPLITS = (('train', 'training'), ('val', 'validation'))
MANIFEST = 'toy_manifest.json'

_DATASET_KEY = {'coco': 1, 'ade': 2}
_SPLIT_KEY = {'train': 0, 'val': 1}

# COCO objects
_CROWD_MIN_AREA = 20
_CROWD_MIN_VISIBLE_FRACTION = 0.25
_CLASS_HUE = (0, 45, 90, 135)  # OpenCV hue units (0-180): red, green, cyan, violet
_CONTOUR_SCALE = 4  # contours traced at 4x so pycocotools rasterises back exactly


# --------------------------------------------------------------------------
# generic helpers
# --------------------------------------------------------------------------
def _rng(seed: int, dataset: str, split: str, idx: int) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence(
            [int(seed), _DATASET_KEY[dataset], _SPLIT_KEY[split], int(idx)]))


def _sample_side(rng: np.random.Generator) -> int:
    while True:
        side = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
        if side % 32:
            return side


def _grid(h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w]
    return yy.astype(np.float32), xx.astype(np.float32)


def _smooth_noise(rng, h: int, w: int, cells: float) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a coarse grid upsampled bicubically."""
    long_side = max(h, w)
    gh = max(2, int(round(cells * h / long_side)) + 1)
    gw = max(2, int(round(cells * w / long_side)) + 1)
    grid = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _stripes(rng, yy, xx, period: float) -> np.ndarray:
    theta = rng.uniform(0, math.pi)
    phase = rng.uniform(0, 2 * math.pi)
    proj = xx * math.cos(theta) + yy * math.sin(theta)
    return np.sin(2 * math.pi * proj / period + phase).astype(np.float32)


def _linear_ramp(rng, yy, xx) -> np.ndarray:
    """A ramp from 0 to 1 along a random direction."""
    theta = rng.uniform(0, 2 * math.pi)
    t = xx * math.cos(theta) + yy * math.sin(theta)
    t = t - t.min()
    return t / max(float(t.max()), 1e-6)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """One BGR colour (float32) from OpenCV-style HSV (h in 0-180)."""
    px = np.array([[[int(round(h)) % 180, int(np.clip(s, 0, 255)),
                     int(np.clip(v, 0, 255))]]], np.uint8)
    return cv2.cvtColor(px, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _colour_jitter(rng, img: np.ndarray, hue: float, sat: Tuple[float, float],
                   val: Tuple[float, float]) -> np.ndarray:
    hsv = cv2.cvtColor(_to_uint8(img), cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 0] = np.mod(hsv[..., 0] + rng.uniform(-hue, hue), 180)
    hsv[..., 1] *= rng.uniform(*sat)
    hsv[..., 2] *= rng.uniform(*val)
    hsv = np.clip(np.rint(hsv), 0, [179, 255, 255]).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR).astype(np.float32)


def _finish(rng, img: np.ndarray, noise: Tuple[float, float]) -> np.ndarray:
    img = img + rng.normal(0, rng.uniform(*noise), img.shape).astype(np.float32)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 0.8))
    return _to_uint8(img)


def _write_jpg(path: str, img: np.ndarray) -> None:
    if not cv2.imwrite(path, img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
        raise IOError(f'could not write {path}')


def _write_png(path: str, img: np.ndarray) -> None:
    if not cv2.imwrite(path, img):
        raise IOError(f'could not write {path}')


def _fill_polys(mask: np.ndarray, polys, value: int = 1) -> None:
    """Fill float polygons with 4 fractional bits (sub-pixel placement)."""
    pts = [np.round(np.asarray(p, np.float64) * 16).astype(np.int32)
           for p in polys]
    cv2.fillPoly(mask, pts, value, cv2.LINE_8, 4)


def _fill_ellipse(mask: np.ndarray, centre, axes, angle: float,
                  value: int = 1) -> None:
    c = (int(round(centre[0] * 16)), int(round(centre[1] * 16)))
    a = (max(1, int(round(axes[0] * 16))), max(1, int(round(axes[1] * 16))))
    cv2.ellipse(mask, c, a, float(angle), 0, 360, value, -1, cv2.LINE_8, 4)


def _manifest(kind: str, seed: int, num_train: int, num_val: int) -> Dict:
    return dict(generator=GENERATOR_NAME, version=GENERATOR_VERSION,
                kind=kind, seed=int(seed), num_train=int(num_train),
                num_val=int(num_val))


def _read_manifest(path: str) -> Dict:
    try:
        with open(path) as f:
            got = json.load(f)
    except (OSError, ValueError):
        return {}
    return got if isinstance(got, dict) else {}


def _manifest_matches(path: str, expected: Dict) -> bool:
    """A finished generation (its ``stats`` written last) with these settings."""
    got = _read_manifest(path)
    return 'stats' in got and all(got.get(k) == v for k, v in expected.items())


def _replace(man_path: str, paths, expected: Dict) -> None:
    """Remove ``paths`` (an earlier generation) and mark the folder as being written.

    Refuses (``FileExistsError``) when one of them holds anything and ``man_path`` is not this
    generator's manifest: the folder may hold the real COCO / ADE20K (``data/coco`` is where
    mmdet expects it), and ``--force`` does not change that. The manifest is written first,
    without ``stats``, so an interrupted generation is regenerated, not refused, next time.
    """
    present = [p for p in paths if osp.isfile(p) or (osp.isdir(p) and os.listdir(p))]
    if present and _read_manifest(man_path).get('generator') != GENERATOR_NAME:
        raise FileExistsError(
            f'refusing to replace {present}: {man_path} is not a manifest of '
            f'{GENERATOR_NAME}, so they may be a real dataset. Write the toy data to another '
            'folder (e.g. --out data/toy), or move them away yourself.')
    for p in paths:
        if osp.isdir(p):
            shutil.rmtree(p)
        elif osp.exists(p):
            os.remove(p)
    os.makedirs(osp.dirname(man_path), exist_ok=True)
    with open(man_path, 'w') as f:
        json.dump(expected, f, indent=1)


def _check_args(seed: int, num_train: int, num_val: int) -> None:
    if int(seed) < 0:
        raise ValueError(f'seed must be >= 0, got {seed}')
    if int(num_train) < 0 or int(num_val) < 0:
        raise ValueError('num_train / num_val must be >= 0')


def _count_files(folder: str, suffix: str) -> int:
    if not osp.isdir(folder):
        return -1
    return sum(1 for n in os.listdir(folder) if n.endswith(suffix))


def _size_stats(sizes: List[Tuple[int, int]]) -> Dict:
    if not sizes:
        return {}
    w = np.array([s[0] for s in sizes])
    h = np.array([s[1] for s in sizes])
    return dict(width=[int(w.min()), int(w.max())],
                height=[int(h.min()), int(h.max())],
                mean_wh=[round(float(w.mean()), 1), round(float(h.mean()), 1)],
                any_side_multiple_of_32=int(((w % 32 == 0) | (h % 32 == 0)).sum()))


# --------------------------------------------------------------------------
# COCO toy
# --------------------------------------------------------------------------
def _coco_background(rng, h: int, w: int) -> np.ndarray:
    yy, xx = _grid(h, w)
    c0 = rng.uniform(0, 255, 3).astype(np.float32)
    c1 = rng.uniform(0, 255, 3).astype(np.float32)
    img = c0 + (c1 - c0) * _linear_ramp(rng, yy, xx)[..., None]
    if rng.random() < 0.8:
        amp = rng.uniform(8, 40)
        stripes = _stripes(rng, yy, xx, rng.uniform(5, 40))
        img += amp * stripes[..., None] * rng.uniform(0.3, 1, 3).astype(np.float32)
    blot = _smooth_noise(rng, h, w, rng.uniform(3, 9))
    img += rng.uniform(10, 40) * blot[..., None] * rng.uniform(0.5, 1, 3).astype(np.float32)
    img += rng.normal(0, rng.uniform(3, 14), (h, w, 3)).astype(np.float32)
    # clutter: thin lines and arcs (not objects)
    for _ in range(int(rng.integers(0, 5))):
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        thick = int(rng.integers(1, 3))
        if rng.random() < 0.5:
            p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(img, p0, p1, colour, thick, cv2.LINE_AA)
        else:
            c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            ax = (int(rng.integers(8, 60)), int(rng.integers(8, 60)))
            a0 = float(rng.uniform(0, 360))
            cv2.ellipse(img, c, ax, float(rng.uniform(0, 180)), a0,
                        a0 + float(rng.uniform(40, 200)), colour, thick,
                        cv2.LINE_AA)
    return img


def _coco_shape_mask(rng, cls: int, h: int, w: int) -> np.ndarray:
    """Binary mask (uint8) of one object of class ``cls`` (may be cut by the border)."""
    mask = np.zeros((h, w), np.uint8)
    r_max = 0.33 * min(h, w)
    r = math.exp(rng.uniform(math.log(7.0), math.log(r_max)))
    name = COCO_TOY_CLASSES[cls]
    if name == 'ring':
        r = max(r, 11.0)
    cx = rng.uniform(0.05 * w, 0.95 * w)
    cy = rng.uniform(0.05 * h, 0.95 * h)
    angle = rng.uniform(0, 180)
    if name == 'rectangle':
        size = (2 * r, 2 * r * rng.uniform(0.35, 1.0))
        box = cv2.boxPoints(((cx, cy), size, angle))
        _fill_polys(mask, [box])
    elif name == 'triangle':
        t0 = rng.uniform(0, 2 * math.pi)
        ts = [t0, t0 + math.radians(120 + rng.uniform(-30, 30)),
              t0 + math.radians(240 + rng.uniform(-30, 30))]
        pts = [(cx + r * rng.uniform(0.75, 1.05) * math.cos(t),
                cy + r * rng.uniform(0.75, 1.05) * math.sin(t)) for t in ts]
        _fill_polys(mask, [pts])
    elif name == 'ellipse':
        _fill_ellipse(mask, (cx, cy), (r, r * rng.uniform(0.4, 1.0)), angle)
    elif name == 'ring':
        axes = (r, r * rng.uniform(0.6, 1.0))
        k = rng.uniform(0.4, 0.65)
        _fill_ellipse(mask, (cx, cy), axes, angle)
        _fill_ellipse(mask, (cx, cy), (axes[0] * k, axes[1] * k), angle, 0)
    else:  # pragma: no cover
        raise ValueError(name)
    return mask


def _coco_object_colour(rng, cls: int) -> np.ndarray:
    if rng.random() < 0.25:
        hue = rng.uniform(0, 180)
    else:
        hue = _CLASS_HUE[cls] + rng.normal(0, 18)
    return _hsv(hue, rng.uniform(70, 255), rng.uniform(90, 255))


def _coco_fill(rng, h: int, w: int, colour: np.ndarray) -> np.ndarray:
    """Texture of size (h, w, 3) for an object's bounding box."""
    yy, xx = _grid(h, w)
    kind = rng.choice(5, p=[0.3, 0.2, 0.15, 0.2, 0.15])
    img = np.broadcast_to(colour, (h, w, 3)).astype(np.float32)
    if rng.random() < 0.5:
        second = colour * rng.uniform(0.35, 0.75)
    else:
        second = _hsv(rng.uniform(0, 180), rng.uniform(0, 255), rng.uniform(40, 255))
    if kind == 1:  # stripes
        sel = (_stripes(rng, yy, xx, rng.uniform(4, 14)) > 0)[..., None]
        img = np.where(sel, img, second)
    elif kind == 2:  # checker
        cell = float(rng.integers(3, 9))
        sel = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2 == 0)[..., None]
        img = np.where(sel, img, second)
    elif kind == 3:  # smooth noise
        img = img + rng.uniform(20, 50) * _smooth_noise(
            rng, h, w, rng.uniform(3, 10))[..., None]
    elif kind == 4:  # two-colour gradient
        img = img + (second - img) * _linear_ramp(rng, yy, xx)[..., None]
    shade = 1.0 + rng.uniform(-0.25, 0.25) * (2 * _linear_ramp(rng, yy, xx) - 1)
    return img * shade[..., None]


def _mask_to_polygons(mask: np.ndarray) -> List[List[float]]:
    """COCO polygons whose pycocotools rasterisation reproduces ``mask``.

    Contours are traced on a 4x nearest-upsampled mask; a contour point at
    upsampled pixel ``j`` maps to ``j / 4`` (pycocotools samples pixel ``i``
    at ``x = i``). Holes are joined to their outer contour by a zero-width
    keyhole bridge (even-odd fill); separate components give separate
    polygons. Every polygon has >= 3 points.
    """
    s = _CONTOUR_SCALE
    up = cv2.resize(mask, None, fx=s, fy=s, interpolation=cv2.INTER_NEAREST)
    contours, hier = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hier is None:
        return []
    hier = hier[0]
    polys = []
    for i, c in enumerate(contours):
        if hier[i][3] >= 0:  # a hole: handled with its parent
            continue
        outer = cv2.approxPolyDP(c, 1.0, True).reshape(-1, 2)
        if len(outer) < 3:
            continue
        parts, o0 = [outer], outer[:1]
        j = hier[i][2]
        while j >= 0:
            hole = cv2.approxPolyDP(contours[j], 1.0, True).reshape(-1, 2)
            if len(hole) >= 3:
                parts += [o0, hole, hole[:1]]
            j = hier[j][0]
        if len(parts) > 1:
            parts.append(o0)
        pts = np.concatenate(parts).astype(np.float64) / s
        polys.append([float(v) for v in pts.ravel()])
    return polys


def _coco_image(rng, h: int, w: int):
    """One image and its objects: list of dict(cls, visible, full_area)."""
    img = _coco_background(rng, h, w)
    owner = np.full((h, w), -1, np.int16)
    objects = []
    n = int(rng.integers(2, 7))
    tries = 0
    while True:
        for _ in range(n):
            cls = int(rng.integers(0, len(COCO_TOY_CLASSES)))
            mask = _coco_shape_mask(rng, cls, h, w)
            x, y, bw, bh = cv2.boundingRect(mask)
            if bw == 0 or bh == 0:
                continue
            fill = _coco_fill(rng, bh, bw, _coco_object_colour(rng, cls))
            sub = mask[y:y + bh, x:x + bw].astype(bool)
            img[y:y + bh, x:x + bw][sub] = fill[sub]
            owner[mask.astype(bool)] = len(objects)
            objects.append(dict(cls=cls, full_area=int(mask.sum())))
        visible = [owner == k for k in range(len(objects))]
        ok = [v.sum() >= _CROWD_MIN_AREA and
              v.sum() >= _CROWD_MIN_VISIBLE_FRACTION * o['full_area']
              for v, o in zip(visible, objects)]
        tries += 1
        if any(ok) or tries >= 10:
            break
        n = 1  # every object ended up an ignore region: add one on top
    for o, v in zip(objects, visible):
        o['visible'] = v
    return img, objects


def _coco_split(seed: int, split: str, num: int, img_dir: str,
                ann_path: str) -> Dict:
    from pycocotools import mask as mask_utils

    images, annotations = [], []
    sizes, per_image, per_class, crowd = [], [], [0] * len(COCO_TOY_CLASSES), 0
    area_bins = dict(small=0, medium=0, large=0)
    ann_id = 1
    for idx in range(num):
        rng = _rng(seed, 'coco', split, idx)
        w, h = _sample_side(rng), _sample_side(rng)
        img, objects = _coco_image(rng, h, w)
        img = _finish(rng, img, (2, 6))
        image_id = idx + 1
        file_name = f'{image_id:012d}.jpg'
        _write_jpg(osp.join(img_dir, file_name), img)
        images.append(dict(id=image_id, file_name=file_name, width=w, height=h))
        sizes.append((w, h))
        n_obj = 0
        for o in objects:
            vis = o['visible']
            area_vis = int(vis.sum())
            if area_vis == 0:  # fully occluded: dropped
                continue
            iscrowd = int(area_vis < _CROWD_MIN_AREA or area_vis <
                          _CROWD_MIN_VISIBLE_FRACTION * o['full_area'])
            segm = None if iscrowd else _mask_to_polygons(vis.astype(np.uint8))
            if not segm:
                iscrowd = 1
                segm = mask_utils.encode(np.asfortranarray(vis.astype(np.uint8)))
                segm = dict(size=[int(h), int(w)],
                            counts=segm['counts'].decode('ascii'))
                rle = segm
            else:
                rle = mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
            # area / bbox of the segmentation as pycocotools rasterises it
            area = int(mask_utils.area(rle))
            if area == 0:  # cannot happen with exact polygons; be safe
                continue
            bbox = [float(v) for v in mask_utils.toBbox(rle)]
            annotations.append(dict(
                id=ann_id, image_id=image_id, category_id=o['cls'] + 1,
                segmentation=segm, area=float(area), bbox=bbox,
                iscrowd=iscrowd))
            ann_id += 1
            if iscrowd:
                crowd += 1
            else:
                n_obj += 1
                per_class[o['cls']] += 1
                key = ('small' if area < 32 ** 2 else
                       'medium' if area < 96 ** 2 else 'large')
                area_bins[key] += 1
        per_image.append(n_obj)
    coco = dict(
        info=dict(description=f'mmvssm toy COCO ({split}), seed {seed}',
                  version=str(GENERATOR_VERSION)),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=[dict(id=i + 1, name=n, supercategory='shape')
                    for i, n in enumerate(COCO_TOY_CLASSES)])
    with open(ann_path, 'w') as f:
        json.dump(coco, f, separators=(',', ':'))
    counts = np.bincount(per_image, minlength=7) if per_image else np.zeros(7)
    return dict(
        num_images=num, num_instances=int(sum(per_image)), num_crowd=crowd,
        instances_per_image=dict(
            min=int(min(per_image)) if per_image else 0,
            mean=round(float(np.mean(per_image)), 2) if per_image else 0.0,
            max=int(max(per_image)) if per_image else 0,
            histogram=[int(c) for c in counts]),
        per_class=dict(zip(COCO_TOY_CLASSES, per_class)),
        area_bins=area_bins, sizes=_size_stats(sizes))


def make_coco(root: str, seed: int = 0, num_train: int = DEFAULT_NUM_TRAIN,
              num_val: int = DEFAULT_NUM_VAL, force: bool = False) -> Dict:
    """Write the COCO-format toy dataset under ``<root>/coco``.

    Skips (``result['skipped'] = True``) when ``<root>/coco/toy_manifest.json``
    matches (generator version, seed, counts) and the files are there, unless
    ``force``. Never replaces files without this generator's manifest next to them
    (``FileExistsError``: they may be the real COCO). Returns a summary: ``data_root``, ``ann_files``, ``stats``,
    ``seconds``, ``skipped``. Use with mmdet's ``CocoDataset(data_root=...,
    ann_file='annotations/instances_val2017.json',
    data_prefix=dict(img='val2017/'), metainfo=COCO_TOY_METAINFO)``.
    """
    _check_args(seed, num_train, num_val)
    t0 = time.perf_counter()
    data_root = osp.join(root, 'coco')
    man_path = osp.join(data_root, MANIFEST)
    expected = _manifest('coco', seed, num_train, num_val)
    ann_files = {s: osp.join(data_root, 'annotations', f'instances_{d}.json')
                 for s, d in COCO_SPLITS}
    complete = all(osp.isfile(ann_files[s]) for s, _ in COCO_SPLITS) and \
        _count_files(osp.join(data_root, 'train2017'), '.jpg') == num_train and \
        _count_files(osp.join(data_root, 'val2017'), '.jpg') == num_val
    if not force and complete and _manifest_matches(man_path, expected):
        with open(man_path) as f:
            stats = json.load(f).get('stats', {})
        return dict(kind='coco', data_root=data_root, ann_files=ann_files,
                    stats=stats, skipped=True,
                    seconds=time.perf_counter() - t0)
    _replace(man_path, [osp.join(data_root, sub)
                        for sub in ('train2017', 'val2017', 'annotations')], expected)
    os.makedirs(osp.join(data_root, 'annotations'))
    stats = {}
    for split, d in COCO_SPLITS:
        img_dir = osp.join(data_root, d)
        os.makedirs(img_dir)
        num = num_train if split == 'train' else num_val
        stats[split] = _coco_split(seed, split, num, img_dir,
                                   ann_files[split])
    with open(man_path, 'w') as f:
        json.dump(dict(expected, classes=list(COCO_TOY_CLASSES), stats=stats),
                  f, indent=1)
    return dict(kind='coco', data_root=data_root, ann_files=ann_files,
                stats=stats, skipped=False, seconds=time.perf_counter() - t0)


# --------------------------------------------------------------------------
# ADE toy
# --------------------------------------------------------------------------
def _paint(img, lab, mask, colour, label: int, rng=None, noise: float = 0.0):
    sel = mask.astype(bool)
    if not sel.any():
        return
    if noise and rng is not None:
        vals = colour + rng.normal(0, noise, (int(sel.sum()), 3)).astype(np.float32)
    else:
        vals = colour
    img[sel] = vals
    lab[sel] = label


def _ade_sky(rng, h, w, yy, hy) -> np.ndarray:
    kind = rng.random()
    if kind < 0.25:  # overcast
        hue = rng.uniform(0, 180)
        top = _hsv(hue, rng.uniform(0, 35), rng.uniform(110, 220))
        bottom = _hsv(hue, rng.uniform(0, 25), rng.uniform(170, 250))
    elif kind < 0.35:  # dusk
        top = _hsv(rng.uniform(110, 140), rng.uniform(60, 200), rng.uniform(60, 160))
        bottom = _hsv(rng.uniform(5, 25), rng.uniform(100, 230), rng.uniform(170, 255))
    else:
        hue = rng.uniform(95, 125)
        top = _hsv(hue, rng.uniform(90, 230), rng.uniform(150, 255))
        bottom = _hsv(hue + rng.uniform(-8, 8), rng.uniform(20, 90),
                      rng.uniform(200, 255))
    t = np.clip(yy / np.maximum(hy, 1.0), 0, 1)[..., None]
    sky = top + (bottom - top) * t
    cloud = _smooth_noise(rng, h, w, rng.uniform(4, 9))
    thr = rng.uniform(0.1, 0.6)
    wgt = np.clip((cloud - thr) * 3, 0, 1)[..., None] * rng.uniform(0.3, 0.85)
    white = np.float32(rng.uniform(200, 255))
    return sky * (1 - wgt) + white * wgt


def _ade_other_texture(rng, h, w, yy, xx) -> np.ndarray:
    colour = _hsv(rng.uniform(0, 180), rng.uniform(0, 120), rng.uniform(50, 220))
    img = colour + rng.uniform(10, 35) * _smooth_noise(
        rng, h, w, rng.uniform(4, 20))[..., None]
    if rng.random() < 0.5:
        img = img + rng.uniform(5, 25) * _stripes(
            rng, yy, xx, rng.uniform(6, 30))[..., None]
    return img


def _ade_grass(rng, h, w) -> np.ndarray:
    colour = _hsv(rng.uniform(25, 80), rng.uniform(70, 230), rng.uniform(60, 200))
    streak = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32),
                              (1, 7), 0, sigmaY=2.0)
    img = colour + rng.uniform(60, 110) * streak[..., None]
    img = img + rng.uniform(10, 30) * _smooth_noise(rng, h, w, 6)[..., None]
    return img


def _ade_dirt(rng, h, w) -> np.ndarray:
    colour = _hsv(rng.uniform(5, 28), rng.uniform(30, 160), rng.uniform(60, 210))
    n = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 1.5)
    img = colour + rng.uniform(40, 90) * n[..., None]
    img = img + rng.uniform(10, 30) * _smooth_noise(rng, h, w, 5)[..., None]
    return img


def _ade_car(rng, img, lab, cx, fy, cw):
    h, w = lab.shape
    ch = cw * rng.uniform(0.45, 0.6)
    flip = 1 if rng.random() < 0.5 else -1
    body_col = _hsv(rng.uniform(0, 180), rng.uniform(0, 255), rng.uniform(40, 240))
    m = np.zeros((h, w), np.uint8)
    y0, y1 = fy - 0.65 * ch, fy - 0.15 * ch
    rr = 0.12 * ch
    _fill_polys(m, [[(cx - cw / 2 + rr, y0), (cx + cw / 2 - rr, y0),
                     (cx + cw / 2, y0 + rr), (cx + cw / 2, y1),
                     (cx - cw / 2, y1), (cx - cw / 2, y0 + rr)]])
    top = [cx - flip * 0.3 * cw, cx + flip * 0.22 * cw]
    bot = [cx - flip * 0.4 * cw, cx + flip * 0.38 * cw]
    cabin = [(top[0], fy - ch), (top[1], fy - ch), (bot[1], y0 + 1), (bot[0], y0 + 1)]
    _fill_polys(m, [cabin])
    _paint(img, lab, m, body_col, 4, rng, 6)
    # windows
    win = np.zeros((h, w), np.uint8)
    ccx = cx + flip * (-0.04) * cw
    _fill_polys(win, [[(ccx + (p[0] - ccx) * 0.8, fy - ch + 0.22 * (p[1] - fy + ch))
                       for p in cabin[:2]] +
                      [(ccx + (p[0] - ccx) * 0.85, y0 - 0.05 * ch) for p in cabin[2:]]])
    _paint(img, lab, win, _hsv(rng.uniform(90, 120), rng.uniform(10, 90),
                               rng.uniform(60, 200)), 4, rng, 4)
    # wheels
    wm = np.zeros((h, w), np.uint8)
    for dx in (-0.3, 0.3):
        _fill_ellipse(wm, (cx + dx * cw, fy - 0.17 * ch), (0.17 * ch, 0.17 * ch), 0)
    _paint(img, lab, wm, _hsv(0, 0, rng.uniform(10, 50)), 4, rng, 5)


def _ade_person(rng, img, lab, px, fy, ph):
    h, w = lab.shape
    skin = _hsv(rng.uniform(5, 20), rng.uniform(60, 170), rng.uniform(90, 235))
    shirt = _hsv(rng.uniform(0, 180), rng.uniform(0, 255), rng.uniform(40, 240))
    pants = _hsv(rng.uniform(0, 180), rng.uniform(0, 200), rng.uniform(20, 160))
    hr = 0.11 * ph
    t0, t1 = fy - ph + 2 * hr, fy - 0.45 * ph
    tw = 0.3 * ph * rng.uniform(0.85, 1.15)
    lw = max(1.0, 0.09 * ph)
    m = np.zeros((h, w), np.uint8)  # legs
    for sx in (-1, 1):
        lx = px + sx * tw * 0.22 + sx * rng.uniform(0, 0.08) * ph
        _fill_polys(m, [[(px + sx * tw * 0.22 - lw / 2, t1 - 1),
                         (px + sx * tw * 0.22 + lw / 2, t1 - 1),
                         (lx + lw / 2, fy), (lx - lw / 2, fy)]])
    _paint(img, lab, m, pants, 5, rng, 5)
    m = np.zeros((h, w), np.uint8)  # torso + arms
    _fill_polys(m, [[(px - tw / 2, t0), (px + tw / 2, t0),
                     (px + tw * 0.42, t1), (px - tw * 0.42, t1)]])
    aw = max(1.0, 0.07 * ph)
    for sx in (-1, 1):
        hx = px + sx * (tw / 2 + rng.uniform(0, 0.15) * ph)
        hy = t0 + rng.uniform(0.3, 0.45) * ph
        _fill_polys(m, [[(px + sx * tw / 2, t0), (px + sx * (tw / 2 - aw), t0 + aw),
                         (hx, hy), (hx + sx * aw, hy - aw / 2)]])
    _paint(img, lab, m, shirt, 5, rng, 5)
    m = np.zeros((h, w), np.uint8)  # head
    _fill_ellipse(m, (px, fy - ph + hr), (hr * 0.85, hr), 0)
    _paint(img, lab, m, skin, 5, rng, 4)


def _ade_scene(rng, h: int, w: int):
    yy, xx = _grid(h, w)
    img = np.zeros((h, w, 3), np.float32)
    lab = np.zeros((h, w), np.uint8)
    horizon = rng.uniform(0.25, 0.6) * h
    tilt = rng.uniform(-0.12, 0.12)
    hy = horizon + tilt * (xx - w / 2)
    above = yy < hy
    # sky (1) or a wall (0)
    if rng.random() < 0.88:
        img[above] = _ade_sky(rng, h, w, yy, hy)[above]
        lab[above] = 1
    else:
        img[above] = _ade_other_texture(rng, h, w, yy, xx)[above]
    # buildings (0) rising from the horizon
    for _ in range(int(rng.integers(0, 4))):
        bw = rng.uniform(0.08, 0.3) * w
        x0 = rng.uniform(-0.1 * w, w - 0.05 * w)
        base = horizon + tilt * (x0 + bw / 2 - w / 2) + 3
        top = base - rng.uniform(0.15, 0.85) * horizon
        m = np.zeros((h, w), np.uint8)
        _fill_polys(m, [[(x0, top), (x0 + bw, top), (x0 + bw, base), (x0, base)]])
        col = _hsv(rng.uniform(0, 180), rng.uniform(0, 90), rng.uniform(60, 220))
        _paint(img, lab, m, col, 0, rng, 6)
        cell = rng.uniform(5, 10)
        win = ((np.mod(xx - x0, cell) < cell * 0.5) &
               (np.mod(yy - top, cell) < cell * 0.55) & m.astype(bool))
        img[win] = col * rng.uniform(0.4, 0.7) if rng.random() < 0.5 else \
            np.minimum(col * rng.uniform(1.3, 1.8), 255)
    # ground: grass (2) / dirt (0)
    below = ~above
    field = _smooth_noise(rng, h, w, rng.uniform(2, 6)) + rng.uniform(-0.5, 0.7)
    grass = below & (field > 0)
    dirt = below & ~grass
    img[grass] = _ade_grass(rng, h, w)[grass]
    lab[grass] = 2
    img[dirt] = _ade_dirt(rng, h, w)[dirt]
    # road (3): trapezoid towards a vanishing point
    has_road = rng.random() < 0.8
    bx = rng.uniform(0.2, 0.8) * w
    vx = rng.uniform(0.25, 0.75) * w
    bhw = rng.uniform(0.25, 0.6) * w
    if has_road:
        vy = horizon + tilt * (vx - w / 2)
        thw = rng.uniform(0.01, 0.05) * w
        m = np.zeros((h, w), np.uint8)
        _fill_polys(m, [[(bx - bhw, h + 1), (bx + bhw, h + 1), (vx + thw, vy),
                         (vx - thw, vy)]])
        road = m.astype(bool) & below
        col = _hsv(rng.uniform(0, 180), rng.uniform(0, 30), rng.uniform(60, 150))
        tex = col + rng.uniform(6, 14) * rng.normal(0, 1, (h, w, 1)).astype(np.float32)
        img[road] = tex[road]
        lab[road] = 3
        line = np.zeros((h, w), np.uint8)
        cv2.line(line, (int(bx), h), (int(vx), int(vy)), 1,
                 max(1, int(round(0.012 * w))))
        period = rng.uniform(10, 20)
        dash = (np.mod(np.log1p(np.maximum(yy - vy, 0)) * period, 2) < 1)
        mark = line.astype(bool) & dash & road
        img[mark] = _hsv(rng.choice([0, 28]), rng.choice([0, 180]),
                         rng.uniform(190, 255))
    # cars (4) and persons (5), far to near
    ground_h = max(h - horizon, 1.0)
    things = []
    for _ in range(int(rng.integers(0, 4) if has_road else rng.integers(0, 2))):
        fy = horizon + rng.uniform(0.15, 1.1) * ground_h
        s = (fy - horizon) / ground_h
        cw = max(12.0, s * rng.uniform(0.3, 0.55) * w)
        if has_road:
            cxr = bx + (vx - bx) * (1 - s)
            cx = cxr + rng.uniform(-0.6, 0.6) * max(bhw * s, 4)
        else:
            cx = rng.uniform(0, w)
        things.append((fy, 'car', cx, cw))
    for _ in range(int(rng.integers(0, 4))):
        fy = horizon + rng.uniform(0.1, 1.05) * ground_h
        s = (fy - horizon) / ground_h
        ph = max(14.0, s * rng.uniform(0.5, 0.9) * ground_h + 0.1 * ground_h)
        things.append((fy, 'person', rng.uniform(0.05, 0.95) * w, ph))
    things.sort(key=lambda t: t[0])
    for fy, kind, x, size in things:
        if kind == 'car':
            _ade_car(rng, img, lab, x, fy, size)
        else:
            _ade_person(rng, img, lab, x, fy, size)
    img = _colour_jitter(rng, img, 8, (0.75, 1.25), (0.75, 1.2))
    return _finish(rng, img, (2, 7)), lab


def _ade_split(seed: int, split: str, num: int, img_dir: str,
               ann_dir: str) -> Dict:
    prefix = 'ADE_train' if split == 'train' else 'ADE_val'
    k = len(ADE_TOY_CLASSES)
    pix = np.zeros(k + 1, np.int64)
    present = np.zeros(k + 1, np.int64)
    sizes = []
    for idx in range(num):
        rng = _rng(seed, 'ade', split, idx)
        w, h = _sample_side(rng), _sample_side(rng)
        img, lab = _ade_scene(rng, h, w)
        stem = f'{prefix}_{idx + 1:08d}'
        _write_jpg(osp.join(img_dir, stem + '.jpg'), img)
        _write_png(osp.join(ann_dir, stem + '.png'), lab)
        counts = np.bincount(lab.ravel(), minlength=k + 1)
        pix += counts
        present += counts > 0
        sizes.append((w, h))
    names = ('other', ) + ADE_TOY_CLASSES
    total = max(int(pix.sum()), 1)
    return dict(
        num_images=num,
        pixel_fraction={n: round(float(c) / total, 4) for n, c in zip(names, pix)},
        images_with_class={n: int(c) for n, c in zip(names, present)},
        sizes=_size_stats(sizes))


def make_ade(root: str, seed: int = 0, num_train: int = DEFAULT_NUM_TRAIN,
             num_val: int = DEFAULT_NUM_VAL, force: bool = False) -> Dict:
    """Write the ADE20K-format toy dataset under ``<root>/ade/ADEChallengeData2016``.

    Same skip / ``force`` behaviour and summary as :func:`make_coco`
    (``data_root`` is the ``ADEChallengeData2016`` folder). Read it with
    ``ToyADE20KDataset`` (:mod:`mmvssm.datasets.ade_toy`) and
    ``data_prefix=dict(img_path='images/validation',
    seg_map_path='annotations/validation')``.
    """
    _check_args(seed, num_train, num_val)
    t0 = time.perf_counter()
    base = osp.join(root, 'ade')
    data_root = osp.join(base, 'ADEChallengeData2016')
    man_path = osp.join(base, MANIFEST)
    expected = _manifest('ade', seed, num_train, num_val)
    complete = all(
        _count_files(osp.join(data_root, kind, d), ext) == n
        for (s, d), n in zip(ADE_SPLITS, (num_train, num_val))
        for kind, ext in (('images', '.jpg'), ('annotations', '.png')))
    if not force and complete and _manifest_matches(man_path, expected):
        with open(man_path) as f:
            stats = json.load(f).get('stats', {})
        return dict(kind='ade', data_root=data_root, stats=stats, skipped=True,
                    seconds=time.perf_counter() - t0)
    _replace(man_path, [data_root], expected)
    stats = {}
    for split, d in ADE_SPLITS:
        img_dir = osp.join(data_root, 'images', d)
        ann_dir = osp.join(data_root, 'annotations', d)
        os.makedirs(img_dir)
        os.makedirs(ann_dir)
        num = num_train if split == 'train' else num_val
        stats[split] = _ade_split(seed, split, num, img_dir, ann_dir)
    with open(man_path, 'w') as f:
        json.dump(dict(expected, classes=list(ADE_TOY_CLASSES),
                       label_values='0 = other (ignored with reduce_zero_label), '
                       '1..K = classes', stats=stats), f, indent=1)
    return dict(kind='ade', data_root=data_root, stats=stats, skipped=False,
                seconds=time.perf_counter() - t0)


__all__ = [
    'COCO_TOY_CLASSES', 'COCO_TOY_PALETTE', 'COCO_TOY_METAINFO',
    'ADE_TOY_CLASSES', 'ADE_TOY_PALETTE', 'ADE_TOY_METAINFO',
    'GENERATOR_VERSION', 'make_coco', 'make_ade'
]
