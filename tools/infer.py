"""Run a trained detector / segmentor on images and save the painted predictions.

    python tools/infer.py CONFIG CHECKPOINT IMAGE_OR_DIR [IMAGE_OR_DIR ...] --out-dir DIR
        [--device cpu|cuda:0] [--score-thr 0.3] [--opacity 0.5] [--non-strict]
        [--cfg-options k=v ...]

Detection (``default_scope='mmdet'``): ``init_detector`` + ``inference_detector`` and mmdet's
``DetLocalVisualizer`` (boxes, labels and instance masks blended over the image, predictions
with score >= ``--score-thr``). Segmentation (``'mmseg'``): ``init_model`` + ``inference_model``
and mmseg's ``SegLocalVisualizer`` (the label map blended with ``--opacity``). One painted image
per input is written to ``--out-dir``, under the input's path relative to the folder argument it
was found in (a file argument: its name), ``.png`` for segmentation. Folders are walked
recursively, skipping ``--out-dir``. Before anything runs, an output that would overwrite an input
image, or two inputs painted to the same output, is refused.

CHECKPOINT must match the model of CONFIG: it is loaded strictly first
(``mmvssm.mm.run_setup.check_checkpoint``), a mismatch is an error listing the missing /
unexpected / shape-mismatched keys (``--non-strict``: load the matching part anyway, as mmdet /
mmseg do).

Offline: the weights come from CHECKPOINT only. ``init_detector`` / ``init_model`` never call
``init_weights`` and clear the backbone's ``init_cfg``; this script also drops every other
``Pretrained`` ``init_cfg`` of the config, so no ImageNet checkpoint is downloaded.
"""
import argparse
import os
import os.path as osp

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Paint det/seg predictions on images')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='trained checkpoint (mmengine .pth)')
    parser.add_argument('images', nargs='+', help='image files and/or folders of images')
    parser.add_argument('--out-dir', required=True, help='folder for the painted images')
    parser.add_argument('--device', default=None, help="'cpu', 'cuda:0'... (default: cuda:0 "
                        'when available, else cpu)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detection: minimum score of a drawn instance')
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='segmentation: opacity of the painted label map')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings in the config, xxx=yyy pairs')
    parser.add_argument('--non-strict', action='store_true',
                        help='load a checkpoint that does not match the model (missing, '
                        'unexpected or shape-mismatched keys) anyway: only the matching weights, '
                        'the rest stays randomly initialised (default: an error listing them)')
    return parser.parse_args(argv)


def collect_images(inputs, out_dir=None):
    """``(image, name)`` pairs: files as given (name: the file name), folders expanded (sorted,
    recursively; name: the path under that folder) to their image files, ``out_dir`` skipped."""
    skip = osp.realpath(out_dir) if out_dir else None
    files = []
    for p in inputs:
        if osp.isdir(p) and osp.realpath(p) == skip:
            raise ValueError(f'--out-dir {out_dir} is the input folder {p}: the paintings would '
                             'mix with the images (and be read back next time); choose another '
                             '--out-dir')
        if osp.isdir(p):
            found = []
            for root, dirs, names in os.walk(p):
                dirs[:] = [d for d in dirs if osp.realpath(osp.join(root, d)) != skip]
                found += [osp.join(root, n) for n in names if n.lower().endswith(IMG_EXTENSIONS)]
            files += [(f, osp.relpath(f, p)) for f in sorted(found)]
        elif osp.isfile(p):
            files.append((p, osp.basename(p)))
        else:
            raise FileNotFoundError(f'no such image or folder: {p}')
    if not files:
        raise FileNotFoundError(f'no images found in {inputs}')
    return files


def plan_outputs(images, out_dir, suffix=None):
    """``[(image, output path)]`` for ``collect_images``' pairs (``suffix``: a new extension).
    Raise ``ValueError`` before any work if an output would overwrite an input image or two
    inputs would be painted to the same output."""
    inputs = {osp.realpath(p): p for p, _ in images}
    plan, taken = [], {}
    for path, name in images:
        if suffix:
            name = osp.splitext(name)[0] + suffix
        out = osp.join(out_dir, name)
        key = osp.realpath(out)
        if key in inputs:
            raise ValueError(
                f'the painting of {path} would overwrite the input image {inputs[key]} '
                f'({out}): choose an --out-dir outside the input folders')
        if key in taken:
            if osp.realpath(taken[key]) == osp.realpath(path):
                continue  # the same image given twice
            if osp.splitext(osp.realpath(taken[key]))[0] == osp.splitext(osp.realpath(path))[0]:
                hint = (f'they differ only in their extension and every painting is written as '
                        f'{suffix}: rename one, or run them with different --out-dir')
            else:
                hint = ('pass their common parent folder (outputs keep the path under a folder '
                        'argument), or run them with different --out-dir')
            raise ValueError(f'{taken[key]} and {path} would both be painted to {out}: {hint}')
        taken[key] = path
        plan.append((path, out))
    return plan


def drop_pretrained(obj) -> int:
    """Set every ``init_cfg`` of type ``Pretrained`` (and every ``pretrained``) in a config tree to None."""
    from mmvssm.mm.run_setup import config_dicts
    n = 0
    for d in config_dicts(obj):
        ic = d.get('init_cfg')
        if isinstance(ic, dict) and ic.get('type') == 'Pretrained':
            d['init_cfg'] = None
            n += 1
        if d.get('pretrained'):
            d['pretrained'] = None
            n += 1
    return n


def infer_det(cfg, args, images, device):
    import mmcv
    from mmdet.apis import inference_detector, init_detector
    from mmdet.registry import VISUALIZERS
    model = init_detector(cfg, args.checkpoint, device=device)
    vis_cfg = dict(model.cfg.visualizer)
    vis_cfg.update(save_dir=None, vis_backends=None, name=f'mmvssm_infer_{os.getpid()}_{id(args)}')
    visualizer = VISUALIZERS.build(vis_cfg)
    visualizer.dataset_meta = model.dataset_meta
    outs = []
    for path, out in images:
        result = inference_detector(model, path)
        img = mmcv.imread(path, channel_order='rgb')
        os.makedirs(osp.dirname(out) or '.', exist_ok=True)
        visualizer.add_datasample(osp.basename(path), img, data_sample=result, draw_gt=False,
                                  show=False, pred_score_thr=args.score_thr, out_file=out)
        n = int((result.pred_instances.scores >= args.score_thr).sum())
        print(f'{path}: {n} instance(s) with score >= {args.score_thr} -> {out}')
        outs.append(out)
    return outs


def infer_seg(cfg, args, images, device):
    import mmcv
    from mmengine.model import revert_sync_batchnorm
    from mmseg.apis import inference_model, init_model
    from mmseg.registry import VISUALIZERS
    model = init_model(cfg, args.checkpoint, device=device)
    model = revert_sync_batchnorm(model)  # mmseg's init_model keeps SyncBN (single process here)
    vis_cfg = dict(model.cfg.visualizer)
    # own instance name: a visualizer named 'visualizer' may already exist in this process
    vis_cfg.update(alpha=args.opacity, save_dir=None, vis_backends=None,
                   name=f'mmvssm_infer_{os.getpid()}_{id(args)}')
    visualizer = VISUALIZERS.build(vis_cfg)
    visualizer.dataset_meta = model.dataset_meta
    outs = []
    for path, out in images:
        result = inference_model(model, path)
        img = mmcv.imread(path, channel_order='rgb')
        os.makedirs(osp.dirname(out) or '.', exist_ok=True)
        visualizer.add_datasample(osp.basename(path), img, data_sample=result, draw_gt=False,
                                  show=False, with_labels=True, out_file=out)
        labels = sorted(int(v) for v in result.pred_sem_seg.data.unique())
        print(f'{path}: classes {labels} -> {out}')
        outs.append(out)
    return outs


def main(argv=None):
    args = parse_args(argv)
    import torch
    from mmengine.config import Config

    from mmvssm.mm import run_setup as tools
    cfg = Config.fromfile(args.config)
    scope = tools.setup_scope(cfg)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    # outputs planned (and refused on a clash) before any work
    images = plan_outputs(collect_images(args.images, args.out_dir), args.out_dir,
                          '.png' if scope == 'mmseg' else None)
    drop_pretrained(cfg.model)
    tools.adapt_to_device(cfg)  # SyncBN -> BN without CUDA
    if not args.non_strict:  # init_detector / init_model load non-strictly
        tools.check_checkpoint(cfg, args.checkpoint, args.config)
    device = args.device or ('cuda:0' if torch.cuda.is_available() else 'cpu')
    os.makedirs(args.out_dir, exist_ok=True)
    run = infer_det if scope == 'mmdet' else infer_seg
    return run(cfg, args, images, device)


if __name__ == '__main__':
    main()
