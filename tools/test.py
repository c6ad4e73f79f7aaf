"""Test (and evaluate) an mmdet or mmseg model from an mmvssm config and a checkpoint.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE_OR_DIR] [--show]
        [--show-dir DIR] [--tta] [--non-strict] [--cfg-options k=v ...]
        [--launcher {none,pytorch,slurm,mpi}]

Dispatches on the config's ``default_scope`` like ``tools/train.py``. ``--out``: detection dumps
the raw predictions to a ``.pkl`` file (mmdet's ``DumpDetResults``); segmentation writes the
predicted label maps as PNGs into that directory (mmseg's ``IoUMetric(output_dir=...)``).
``--show-dir``: painted predictions (ground truth beside for segmentation), saved under
``<work_dir>/<timestamp>/<show_dir>`` for detection and ``<show_dir>/vis_data/vis_image`` for
segmentation (each toolbox's convention).

CHECKPOINT must match the model of CONFIG (``mmvssm.mm.run_setup.check_checkpoint``, before
the runner is built): a mismatch is an error listing the missing / unexpected / shape-mismatched
keys, where mmengine would load the matching part only (``--non-strict``) and evaluate a partly
random model.
"""
import argparse
import os
import warnings
from copy import deepcopy


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Test (and evaluate) a detector or segmentor')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the evaluation metrics')
    parser.add_argument('--out', type=str,
                        help='detection: dump predictions to this .pkl file; segmentation: '
                        'save predicted label maps into this directory')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='directory where painted images will be saved')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument('--tta', action='store_true',
                        help="test-time augmentation: the config's multi-scale + flip for "
                        'segmentation; flip for detection (mmdet 3.3 has no TTA for masks, so '
                        'not for Mask R-CNN)')
    parser.add_argument('--non-strict', action='store_true',
                        help='test a checkpoint that does not match the model (missing, '
                        'unexpected or shape-mismatched keys) anyway: only the matching weights '
                        'are loaded, the rest stays randomly initialised (default: an error '
                        'listing them)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings in the config, xxx=yyy pairs merged into it')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def _visualize(cfg, args, scope):
    hooks = cfg.default_hooks
    if 'visualization' not in hooks:
        raise RuntimeError('--show / --show-dir need default_hooks.visualization '
                           "(dict(type='DetVisualizationHook') or 'SegVisualizationHook')")
    hook = hooks['visualization']
    hook['draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        if scope == 'mmdet':
            hook['test_out_dir'] = args.show_dir
        else:
            cfg.visualizer['save_dir'] = args.show_dir
            # a fresh visualizer (the runner names it after the run): mmseg's fixed name
            # 'visualizer' would reuse an instance an earlier run made in this process
            cfg.visualizer.pop('name', None)
            hook['interval'] = 1  # every image (mmseg's default draws every 50th)


def _mask_head(obj, key='model'):
    """The config key of a mask head in a model config (None without one)."""
    if isinstance(obj, dict):
        if obj.get('mask_head'):
            return f'{key}.mask_head'
        for k, v in obj.items():
            found = _mask_head(v, f'{key}.{k}')
            if found:
                return found
    return None


def _tta(cfg, scope):
    if scope == 'mmseg':
        if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
            raise RuntimeError('--tta needs tta_model and tta_pipeline in the config')
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
        return
    from mmengine import ConfigDict
    mask_head = _mask_head(cfg.model)
    if mask_head:
        raise RuntimeError(
            '--tta: mmdet 3.3 has no test-time augmentation for instance segmentation '
            f'(DetTTAModel merges boxes only) and this model predicts masks ({mask_head}). '
            'Test without --tta.')
    if 'tta_model' not in cfg:
        warnings.warn('No tta_model in the config: using DetTTAModel (nms 0.5, 100 per image)')
        cfg.tta_model = dict(type='DetTTAModel', tta_cfg=dict(
            nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
    if 'tta_pipeline' not in cfg:
        warnings.warn('No tta_pipeline in the config: using the test pipeline with flip')
        data_cfg = cfg.test_dataloader.dataset
        while 'dataset' in data_cfg:
            data_cfg = data_cfg['dataset']
        cfg.tta_pipeline = deepcopy(data_cfg.pipeline)
        cfg.tta_pipeline[-1] = dict(type='TestTimeAug', transforms=[
            [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
            [dict(type='PackDetInputs', meta_keys=(
                'img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
                'flip_direction'))]])
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def main(argv=None):
    args = parse_args(argv)
    from mmengine.config import Config
    from mmvssm.mm import run_setup as tools

    cfg = Config.fromfile(args.config)
    scope = tools.setup_scope(cfg)
    tools.apply_common_args(cfg, args)
    cfg.load_from = args.checkpoint

    if args.show or args.show_dir:
        _visualize(cfg, args, scope)
    if args.tta:
        _tta(cfg, scope)
    if args.out is not None and scope == 'mmseg':
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    if args.out is not None and scope == 'mmdet' and not args.out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must be a .pkl file for detection, got {args.out!r}')

    from mmvssm.mm.preflight import explain_data_errors, preflight
    preflight(cfg, 'test', checkpoint=args.checkpoint, config_name=args.config)
    explain_data_errors()

    tools.adapt_to_device(cfg, args.launcher)
    # mmengine's runner loads load_from non-strictly; one check per node (a second CPU model and
    # checkpoint copy per rank would be wasted memory), its error stops the launch
    if not args.non_strict and os.environ.get('LOCAL_RANK', '0') == '0':
        tools.check_checkpoint(cfg, args.checkpoint, args.config)
    runner = tools.build_runner(cfg)
    if args.out is not None and scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    try:
        runner.test()
    finally:
        del runner
        tools.close_distributed()


if __name__ == '__main__':
    main()
