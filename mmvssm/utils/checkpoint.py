"""Read official checkpoints and load them strictly.

Framework-free: local files and http(s) URLs load with ``torch.load(weights_only=True)`` and
mmvssm's allow-list (:mod:`mmvssm.utils.safe_load`), URLs through torch.hub's cache; other
schemes (``open-mmlab://``, ``s3://``...) go to mmengine's ``CheckpointLoader`` when mmengine
is installed. Nothing here swallows an error: a mismatch raises
:class:`CheckpointMismatchError` listing every offending key.
"""
import fnmatch
import logging
import math
import os
import pickle
import re
import sys
from collections import OrderedDict
from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import torch
from torch import nn

#: Top-level keys tried, in order, when a checkpoint is a dict wrapping the weights.
TOP_LEVEL_KEYS = ('state_dict', 'model', 'model_ema', 'module', 'params')
#: Prefixes stripped from every key (wrappers of training frameworks).
DEFAULT_PREFIXES = ('module.', 'backbone.', 'encoder.')


#: Top-level modules of mmdet / mmseg models besides the backbone.
_NON_BACKBONE_MODULES = ('neck', 'rpn_head', 'roi_head', 'bbox_head', 'mask_head', 'decode_head',
                         'auxiliary_head', 'data_preprocessor')


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not match the model it is loaded into."""


_SCHEME_RE = re.compile(r'^[A-Za-z][\w+.-]*:(//|[\w-]+://)')  # 's3://', 'open-mmlab:s3://'


def is_remote(path) -> bool:
    """Whether ``path`` names a file through a URI scheme (``https://``, ``s3://``,
    ``open-mmlab://``, petrel's ``cluster:s3://``...) rather than the local file system."""
    return isinstance(path, str) and _SCHEME_RE.match(path) is not None


def load_url_weights_only(url: str, map_location=None, model_dir: Optional[str] = None,
                          progress: Optional[bool] = None):
    """An http(s) checkpoint through torch.hub's cache, unpickled with ``weights_only=True``.

    mmengine's http loader (``load_url``) unpickles downloads with ``weights_only=False``, so
    an allow-list would not apply to the URLs every config names. As mmengine's: in a
    distributed run rank 0 downloads first, then the other ranks read its file.
    """
    from torch.hub import load_state_dict_from_url
    if progress is None:  # a bar on terminals only, as mmengine's
        progress = sys.stderr.isatty()
    dist = torch.distributed
    rank, world = ((dist.get_rank(), dist.get_world_size())
                   if dist.is_available() and dist.is_initialized() else (0, 1))

    def load():
        return load_state_dict_from_url(url, model_dir=model_dir, map_location=map_location,
                                        progress=progress, weights_only=True)
    error = None
    if rank == 0:
        try:
            checkpoint = load()
        except Exception as e:  # noqa: BLE001  (re-raised below, after the other ranks' barrier)
            error = e
    if world > 1:
        dist.barrier()
        if rank > 0:
            checkpoint = load()  # fails as rank 0 did, if it did: no rank waits forever
    if error is not None:
        raise error
    return checkpoint


def load_checkpoint_file(filename: Union[str, os.PathLike], map_location='cpu',
                         mmap: bool = False):
    """Load a checkpoint object from a local path (``~`` expanded), an http(s) URL, or any
    scheme mmengine's ``CheckpointLoader`` knows (``open-mmlab://``, ``s3://``...).

    ``mmap``: a local zip checkpoint is memory-mapped (its tensors are not read)."""
    filename = os.fspath(filename)
    remote = is_remote(filename)
    if not remote:
        filename = os.path.expanduser(filename)
        if not os.path.exists(filename):
            raise FileNotFoundError(
                f'checkpoint not found: {filename!r}. Give an existing local path or a URL '
                '(see README, "Model zoo", for offline use).')
    from .safe_load import allow_official_checkpoint_globals
    allow_official_checkpoint_globals()
    try:
        if filename.startswith(('http://', 'https://')):
            return load_url_weights_only(filename, map_location=map_location)
        if not remote:
            return torch.load(filename, map_location=map_location, weights_only=True, mmap=mmap)
        try:
            from mmengine.runner.checkpoint import CheckpointLoader
        except ImportError as e:
            raise ImportError(f'{filename}: loading this scheme needs mmengine '
                              '(pip install mmengine), or download the file and give its '
                              'local path') from e
        return CheckpointLoader.load_checkpoint(filename, map_location=map_location)
    except pickle.UnpicklingError as e:
        raise pickle.UnpicklingError(
            f'{filename}: refused by torch.load(weights_only=True): it pickles an object outside '
            "mmvssm's allow-list (see mmvssm/utils/safe_load.py). If you trust this file, extract "
            f'its weights once with torch.load(..., weights_only=False). Original error: {e}') from e
    except (RuntimeError, KeyError, EOFError, ValueError) as e:
        if remote:
            raise
        # torch.load's own messages do not name the file ('KeyError: 101' for a text file,
        # 'PytorchStreamReader failed ...' for a truncated zip)
        raise RuntimeError(
            f'{filename}: torch.load cannot read it as a PyTorch checkpoint ({type(e).__name__}: '
            f'{e}). Is it complete (an interrupted download) and a file saved by torch.save?'
        ) from e


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _tensors(weights) -> Dict[str, torch.Tensor]:
    """The tensor entries of a wrapped state dict (official files keep e.g. ``num_classes``)."""
    if not isinstance(weights, dict):
        raise CheckpointMismatchError(f'checkpoint weights are a {type(weights).__name__}, '
                                      'not a dict of tensors')
    return OrderedDict((n, t) for n, t in weights.items() if isinstance(t, torch.Tensor))


def extract_state_dict(obj, key: Optional[str] = None) -> Tuple[Dict[str, torch.Tensor], str]:
    """Find the weights in a checkpoint object.

    Args:
        obj: what ``torch.load`` returned.
        key: the top-level key to use; ``None`` auto-detects one of
            :data:`TOP_LEVEL_KEYS`, or a flat state dict.

    Returns:
        ``(state_dict, key_used)`` with ``key_used='flat'`` for a flat file.
    """
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            have = sorted(obj.keys()) if isinstance(obj, dict) else type(obj).__name__
            raise CheckpointMismatchError(f'checkpoint has no top-level key {key!r}; it has {have}')
        return _tensors(obj[key]), key
    if _is_state_dict(obj):
        return OrderedDict(obj), 'flat'
    if isinstance(obj, dict):
        for k in TOP_LEVEL_KEYS:
            if k in obj and isinstance(obj[k], dict) and len(obj[k]):
                return _tensors(obj[k]), k
        raise CheckpointMismatchError(
            f'cannot find weights in checkpoint: top-level keys are {sorted(map(str, obj))}; '
            f'expected a flat state dict or one of {TOP_LEVEL_KEYS}')
    raise CheckpointMismatchError(f'checkpoint is a {type(obj).__name__}, not a dict of tensors')


def strip_prefixes(state_dict: Dict[str, torch.Tensor],
                   prefixes: Sequence[str] = DEFAULT_PREFIXES) -> Dict[str, torch.Tensor]:
    """Strip wrapper prefixes (``module.``, ``backbone.``...) repeatedly from every key."""
    out = OrderedDict()
    for k, v in state_dict.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def load_state_dict_strict(model: nn.Module, state_dict: Dict[str, torch.Tensor],
                           allowed_missing: Sequence[str] = (),
                           allowed_unexpected: Sequence[str] = (),
                           source: str = 'checkpoint', logger=None,
                           adapted: Optional[dict] = None) -> Dict[str, list]:
    """Load ``state_dict`` into ``model``; fail on any mismatch not explicitly allowed.

    Args:
        allowed_missing / allowed_unexpected: fnmatch patterns of keys that may be
            missing from / extra in the checkpoint (e.g. ``'head.*'``).
        source: named in the error message.
        adapted: what the caller changed before loading, reported and logged:
            ``initialised`` (keys it filled with the model's own values) and ``resized``
            (``{key: (checkpoint shape, loaded shape)}``).

    Returns:
        ``{'missing': [...], 'unexpected': [...], 'initialised': [...], 'resized': {...}}``:
        the allowed differences, reported (logged at WARNING when keys kept the model's
        initialisation or a tensor was shrunk, else INFO).

    Raises:
        CheckpointMismatchError: listing missing, unexpected and shape-mismatched keys.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shape = [f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}'
             for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    bad_missing = [k for k in missing if not _matches(k, allowed_missing)]
    bad_unexpected = [k for k in unexpected if not _matches(k, allowed_unexpected)]
    if bad_missing or bad_unexpected or shape:
        lines = [f'{source} does not match {type(model).__name__}:']
        if bad_missing:
            lines.append(f'  missing in checkpoint ({len(bad_missing)}): {bad_missing[:20]}')
        if bad_unexpected:
            lines.append(f'  unexpected in checkpoint ({len(bad_unexpected)}): {bad_unexpected[:20]}')
        if shape:
            lines.append(f'  shape mismatch ({len(shape)}): {shape[:20]}')
        heads = [k for k in bad_unexpected if k.split('.', 1)[0] in _NON_BACKBONE_MODULES]
        if heads:
            lines.append(f'  {heads[0]!r} is not a backbone weight: for a detector / segmentor '
                         "checkpoint pass prefix='backbone.' (init_cfg=dict(type='Pretrained', "
                         "checkpoint=..., prefix='backbone.')) to load only its backbone.")
        else:
            lines.append('  Is this checkpoint of the same family and size (arch) as the model?')
        raise CheckpointMismatchError('\n'.join(lines))
    model.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=False)
    adapted = adapted or {}
    report = {'missing': missing, 'unexpected': unexpected,
              'initialised': list(adapted.get('initialised', [])),
              'resized': dict(adapted.get('resized', {}))}
    msg = f'loaded {source} into {type(model).__name__}'
    if missing or unexpected:
        msg += f' (allowed: missing {missing}, unexpected {unexpected})'
    if report['initialised']:
        msg += (f'; not in the checkpoint, kept as initialised: {report["initialised"]}')
    shrunk = False
    for k, (old, new) in report['resized'].items():
        msg += f'; resized {k} {old} -> {new}'
        shrunk |= math.prod(new) < math.prod(old)
    if shrunk:
        msg += ('; the checkpoint holds a larger position grid than the model (a stride-8 *_s8 '
                'checkpoint in a stride-16 model?): check the arch')
    _log(msg, logging.WARNING if report['initialised'] or shrunk else logging.INFO, logger)
    return report


def _log(msg: str, level: int, logger=None) -> None:
    """To ``logger``, else mmengine's current logger, else Python's ``mmvssm`` logger."""
    if logger is not None:
        logger.log(level, msg)
        return
    try:
        from mmengine.logging import print_log
    except ImportError:
        logging.getLogger('mmvssm').log(level, msg)
        return
    print_log(msg, logger='current', level=level)
