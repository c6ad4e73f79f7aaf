"""Read official checkpoints and load them strictly.

Framework-free: uses mmengine's ``CheckpointLoader`` (URLs, cache, ``open-mmlab://``...)
when mmengine is installed, else ``torch.load`` with ``weights_only=True``.
Nothing here swallows an error: a mismatch raises :class:`CheckpointMismatchError`
listing every offending key.
"""
import fnmatch
import os
import pickle
from collections import OrderedDict
from typing import Dict, Iterable, Optional, Sequence, Tuple

import torch
from torch import nn

#: Top-level keys tried, in order, when a checkpoint is a dict wrapping the weights.
TOP_LEVEL_KEYS = ('state_dict', 'model', 'model_ema', 'module', 'params')
#: Prefixes stripped from every key (wrappers of training frameworks).
DEFAULT_PREFIXES = ('module.', 'backbone.', 'encoder.')


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not match the model it is loaded into."""


def load_checkpoint_file(filename: str, map_location='cpu'):
    """Load a checkpoint object from a local path or URL (``(any)``)."""
    if not (filename.startswith(('http://', 'https://', 'open-mmlab://', 'torchvision://'))
            or os.path.exists(filename)):
        raise FileNotFoundError(
            f'checkpoint not found: {filename!r}. Give an existing local path or a URL '
            '(see README, "Model zoo", for offline use).')
    from .safe_load import allow_official_checkpoint_globals
    allow_official_checkpoint_globals()
    try:
        from mmengine.runner.checkpoint import CheckpointLoader
    except ImportError:
        CheckpointLoader = None
    try:
        if CheckpointLoader is None:
            return torch.load(filename, map_location=map_location, weights_only=True)
        return CheckpointLoader.load_checkpoint(filename, map_location=map_location)
    except pickle.UnpicklingError as e:
        raise pickle.UnpicklingError(
            f'{filename}: refused by torch.load(weights_only=True): it pickles an object outside '
            "mmvssm's allow-list (see mmvssm/utils/safe_load.py). If you trust this file, extract "
            f'its weights once with torch.load(..., weights_only=False). Original error: {e}') from e


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


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
        return OrderedDict(obj[key]), key
    if _is_state_dict(obj):
        return OrderedDict(obj), 'flat'
    if isinstance(obj, dict):
        for k in TOP_LEVEL_KEYS:
            if k in obj and isinstance(obj[k], dict) and len(obj[k]):
                return OrderedDict((n, t) for n, t in obj[k].items() if isinstance(t, torch.Tensor)), k
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
                           source: str = 'checkpoint', logger=None) -> Dict[str, list]:
    """Load ``state_dict`` into ``model``; fail on any mismatch not explicitly allowed.

    Args:
        allowed_missing / allowed_unexpected: fnmatch patterns of keys that may be
            missing from / extra in the checkpoint (e.g. ``'head.*'``).
        source: named in the error message.

    Returns:
        ``{'missing': [...], 'unexpected': [...]}``: the allowed differences, reported.

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
        lines.append('  Is this checkpoint of the same family and size (arch) as the model?')
        raise CheckpointMismatchError('\n'.join(lines))
    model.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=False)
    report = {'missing': missing, 'unexpected': unexpected}
    msg = f'loaded {source} into {type(model).__name__}'
    if missing or unexpected:
        msg += f' (allowed: missing {missing}, unexpected {unexpected})'
    if logger is not None:
        logger.info(msg)
    else:
        try:
            from mmengine.logging import print_log
            print_log(msg, logger='current')
        except ImportError:
            pass
    return report
