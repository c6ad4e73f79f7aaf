"""Train an mmdet (detection) or mmseg (segmentation) model from an mmvssm config.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--auto-scale-lr]
        [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}]

One script for both toolboxes: the config's ``default_scope`` (``mmdet`` or ``mmseg``, set by the
inherited base) picks which one registers its modules. Otherwise it behaves like mmdet's / mmseg's
own ``tools/train.py`` (mmengine ``Runner``), plus a CPU path: without CUDA, SyncBN becomes BN and
distributed runs use the ``gloo`` backend (``tools/dist_train.sh CONFIG 2`` works on a CPU box).

What it shares with ``tools/test.py`` and ``tools/infer.py`` lives in ``mmvssm.mm.run_setup``.
"""
import argparse
import logging
import os


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Train a detector or segmentor (mmdet / mmseg)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true', default=False,
                        help='enable automatic-mixed-precision training (needs a GPU)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by (total batch size) / auto_scale_lr.base_batch_size')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint; without a path, from the latest checkpoint in the '
        'work dir')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings in the config, xxx=yyy pairs merged into it, e.g. '
        'model.backbone.drop_path_rate=0.2 train_dataloader.batch_size=4; lists as key="[a,b]", '
        'list items by index: model.neck.0.out_channels=128')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    # torch.distributed.launch / torchrun (torch >= 2.0) pass --local-rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main(argv=None):
    args = parse_args(argv)
    from mmengine.config import Config
    from mmengine.logging import print_log

    from mmvssm.mm.run_setup import (adapt_to_device, apply_common_args, build_runner,
                                     close_distributed, setup_scope)

    cfg = Config.fromfile(args.config)
    setup_scope(cfg)
    apply_common_args(cfg, args)

    import torch
    amp_in_cfg = (cfg.get('optim_wrapper') or {}).get('type') == 'AmpOptimWrapper'
    if (args.amp or amp_in_cfg) and not torch.cuda.is_available():
        if args.amp:
            raise RuntimeError('--amp needs a GPU (mmengine AmpOptimWrapper is CUDA/NPU/MLU only)')
        raise RuntimeError('the config trains with AmpOptimWrapper, which needs a GPU (mmengine: '
                           'CUDA/NPU/MLU only); on a CPU use --cfg-options '
                           'optim_wrapper.type=OptimWrapper')
    if args.amp:
        if amp_in_cfg:
            print_log('AMP training is already enabled in the config.', logger='current',
                      level=logging.WARNING)
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.auto_scale_lr:
        if 'auto_scale_lr' in cfg and 'base_batch_size' in cfg.auto_scale_lr:
            cfg.auto_scale_lr.enable = True
        else:
            raise RuntimeError('--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=...) '
                               'in the config')

    # resume: an explicit checkpoint, or 'auto' (latest in work_dir)
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    # fail early, naming the file, before the runner writes anything (mmvssm.mm.preflight)
    from mmvssm.mm.preflight import explain_data_errors, preflight
    preflight(cfg, 'train', config_name=args.config)
    explain_data_errors()

    adapt_to_device(cfg, args.launcher)
    runner = build_runner(cfg)
    try:
        runner.train()
    finally:
        del runner
        close_distributed()


if __name__ == '__main__':
    main()
