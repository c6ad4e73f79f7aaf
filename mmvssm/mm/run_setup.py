"""What ``tools/train.py``, ``tools/test.py`` and ``tools/infer.py`` share: register a config's
toolbox, make a GPU recipe run on CPU, apply the common CLI arguments, check a checkpoint strictly
against a config's model, build and close the runner.

mmdet / mmseg are imported only when a function is called (``import mmvssm`` never needs them).
"""
import os
import os.path as osp
import re
from copy import deepcopy

#: keys of each kind named in a checkpoint-mismatch error
MAX_KEYS_SHOWN = 8


def setup_scope(cfg) -> str:
    """Register the modules of the config's toolbox (``default_scope``) and return its name."""
    scope = cfg.get('default_scope')
    if scope == 'mmdet':
        from mmdet.utils import register_all_modules, setup_cache_size_limit_of_dynamo
        setup_cache_size_limit_of_dynamo()
    elif scope == 'mmseg':
        from mmseg.utils import register_all_modules
    else:
        raise ValueError(
            f'config default_scope is {scope!r}; mmvssm tools run mmdet or mmseg configs '
            "(inherit a base from 'mmdet::' or 'mmseg::', or set default_scope)")
    register_all_modules(init_default_scope=True)
    # (mmvssm's modules are registered, and its checkpoint allow-list for torch >= 2.6's
    # weights_only loading is in place: importing this package did both)
    # keep freed memory in the process: large CPU activations are otherwise page-faulted in again
    # on every iteration (mmvssm.utils.malloc); MMVSSM_ALLOCATOR=default keeps glibc's defaults
    if os.environ.get('MMVSSM_ALLOCATOR', 'retain') == 'retain':
        from ..utils.malloc import retain_freed_memory
        retain_freed_memory()
    return scope


def config_dicts(obj):
    """Every dict of a config tree (dicts, lists, tuples), parents before their children; a parent's
    values are read after the caller has seen (and possibly changed) it."""
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from config_dicts(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from config_dicts(v)


def _swap_sync_bn(obj):
    """Replace every SyncBN norm in a config tree (``type='SyncBN'`` / ``'MMSyncBN'``, or
    ``'SyncBatchNorm'``, which mmcv and mmvssm's adapters accept too) by ``'BN'``."""
    n = 0
    for d in config_dicts(obj):
        if d.get('type') in ('SyncBN', 'MMSyncBN', 'SyncBatchNorm'):
            d['type'] = 'BN'
            n += 1
    return n


def adapt_to_device(cfg, launcher: str = 'none') -> None:
    """Make a GPU recipe run on a machine without CUDA (no-op when CUDA is available).

    * SyncBN -> BN: torch's SyncBN raises on CPU tensors in a distributed run (and mmengine only
      reverts it in non-distributed runs);
    * distributed: ``gloo`` instead of ``nccl``, DDP without ``device_ids``, and the process group
      initialised here (mmengine's ``init_dist`` calls ``torch.cuda.set_device``, which fails
      without a GPU);
    * ``cudnn_benchmark`` off.
    """
    import torch
    if torch.cuda.is_available():
        return
    from mmengine.logging import print_log
    n = _swap_sync_bn(cfg._cfg_dict)
    if n:
        print_log(f'CUDA is not available: {n} SyncBN norm config(s) set to BN', logger='current')
    env_cfg = cfg.setdefault('env_cfg', {})
    env_cfg['cudnn_benchmark'] = False
    if launcher == 'none':
        return
    if launcher != 'pytorch':
        raise RuntimeError(f'--launcher {launcher} needs CUDA; on CPU use --launcher pytorch '
                           '(tools/dist_train.sh / tools/dist_test.sh)')
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    dist_cfg['backend'] = 'gloo'
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None  # a CPU module
    cfg.model_wrapper_cfg = wrapper
    import torch.distributed as dist
    if launcher == 'pytorch' and not dist.is_initialized():
        kwargs = {k: v for k, v in dist_cfg.items() if k != 'backend'}
        if 'timeout' in kwargs:
            import datetime
            kwargs['timeout'] = datetime.timedelta(seconds=kwargs['timeout'])
        dist.init_process_group(backend='gloo', **kwargs)
        print_log('CUDA is not available: distributed training on CPU with gloo',
                  logger='current')


def apply_common_args(cfg, args) -> None:
    """``--launcher``, ``--cfg-options`` and ``--work-dir`` (CLI > config > config file name)."""
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])


def _shown(items):
    more = len(items) - MAX_KEYS_SHOWN
    return ', '.join(items[:MAX_KEYS_SHOWN]) + (f', ... ({more} more)' if more > 0 else '')


def check_checkpoint(cfg, checkpoint, config_name=None):
    """Load ``checkpoint`` strictly into a CPU model built from ``cfg.model`` (mmengine's
    ``load_checkpoint(strict=True)``: the ``state_dict`` entry, a ``module.`` prefix stripped),
    or raise ``CheckpointMismatchError`` naming (some of) the missing, unexpected and
    shape-mismatched keys. mmengine's runner and mmdet's / mmseg's ``init_*`` load non-strictly."""
    from mmengine.registry import MODELS
    from mmengine.runner import load_checkpoint

    from ..utils.checkpoint import CheckpointMismatchError
    model = MODELS.build(deepcopy(cfg.model))
    try:
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    except RuntimeError as e:
        msg = str(e)
        if not msg.startswith('The model and loaded state dict do not match'):
            raise
        kinds = {'missing': [], 'unexpected': [], 'shape': [], 'other': []}
        for line in msg.splitlines()[1:]:
            head, _, keys = line.partition(' in source state_dict: ')
            size = re.match(r'size mismatch for (\S+): copying a param with shape '
                            r'torch.Size\((.*)\) from checkpoint, the shape in current model is '
                            r'torch.Size\((.*)\)', line)
            if keys and head in ('missing keys', 'unexpected key'):
                kinds[head.split()[0]] += keys.split(', ')
            elif size:
                kinds['shape'].append('{} (checkpoint {}, model {})'.format(*size.groups()))
            elif line.strip():
                kinds['other'].append(line.strip())
        lines = [f'  {title} ({len(kinds[k])}): {_shown(kinds[k])}' for k, title in (
            ('missing', 'missing in the checkpoint'), ('unexpected', 'not in the model'),
            ('shape', 'shape mismatch'), ('other', 'other')) if kinds[k]]
        raise CheckpointMismatchError(
            f'checkpoint {checkpoint} does not match the model of '
            f'{config_name or "the config"} (its state_dict, a module. prefix stripped):\n'
            + '\n'.join(lines) + '\nIs it a checkpoint of another model, or of this one with '
            'other settings (num_classes, --cfg-options)? Pass the checkpoint tools/train.py saved '
            'for this config, or --non-strict to load only its matching weights anyway.') from None
    finally:
        del model


def build_runner(cfg):
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)


def close_distributed():
    """End a distributed run (``--launcher pytorch``/``slurm``) while the interpreter is fully alive:
    destroy its process group, then collect the garbage. Call it after dropping the runner.

    The runner's DDP model keeps the gloo group alive through reference cycles. Freed only by the
    collection at interpreter exit, the group's worker thread, releasing a finished work's tensors,
    needs the GIL, is stopped by the finalizing interpreter, and the process aborts after a
    successful run ('terminate called without an active exception', SIGABRT; a core dump showed
    ``ProcessGroupGloo::runLoop`` -> ``~AsyncWork`` -> ``take_gil`` during ``Py_FinalizeEx``)."""
    import gc

    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    gc.collect()
