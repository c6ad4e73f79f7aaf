"""torch >= 2.6 ``weights_only`` loading of official and mmengine checkpoints, without disabling it.

torch 2.6 made ``torch.load(weights_only=True)`` the default; mmengine 0.10.7 calls
``torch.load`` without the argument, so checkpoints that pickle anything besides tensors
and containers stop loading. Instead of the blanket ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``,
we add an explicit allow-list of the harmless objects these checkpoints are known to hold:

* ``argparse.Namespace`` — the ``args`` in Vim / ARM / DeiT-style checkpoints;
* ``yacs.config.CfgNode`` — the ``config`` in VMamba checkpoints. torch's safe unpickler only
  fills exact ``dict``/``OrderedDict`` objects (SETITEMS), so allow-listing the real class does
  not work: the name is mapped to ``OrderedDict`` and configs load as nested ``OrderedDict``
  whether or not yacs is installed;
* mmengine's ``HistoryBuffer`` (its statistics methods through a ``getattr`` restricted to
  public ``HistoryBuffer`` attributes) and the numpy scalar/array reconstructors — what
  mmengine's own training checkpoints (``message_hub``, ``meta``) hold; the bytes of numpy
  scalars come as ``_codecs.encode``, which torch allows by default.

This is the only allow-list: ``import mmvssm`` registers it, and ``tools/train.py`` /
``test.py`` / ``infer.py`` (``setup_scope``) register it for the checkpoints the user names
(``--resume``, ``load_from``, CHECKPOINT) as well as for the official weights. Any other class,
and ``getattr`` on anything but ``HistoryBuffer``, is still refused with an ``UnpicklingError``.
"""
import argparse
import pickle
from collections import OrderedDict

import torch

_APPLIED = False


def _history_buffer_getattr(obj, name):
    """``getattr`` as mmengine checkpoints use it (``HistoryBuffer.<statistic>``), nothing else."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is not HistoryBuffer or not isinstance(name, str) or name.startswith('_'):
        raise pickle.UnpicklingError(
            f'weights_only load: getattr({getattr(obj, "__name__", type(obj).__name__)}, '
            f'{name!r}) is not allowed (only public HistoryBuffer attributes)')
    return getattr(obj, name)


def _allow_list():
    allowed = [argparse.Namespace, (OrderedDict, 'yacs.config.CfgNode')]
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
        allowed.append(HistoryBuffer)
        # HistoryBuffer.__getstate__ also pickles its statistics functions (HistoryBuffer.min,
        # .max, .current, .mean), which pickle as ``getattr(HistoryBuffer, 'min')``: resume of any
        # mmengine checkpoint needs 'builtins.getattr'. Map that name to a getattr restricted to
        # public HistoryBuffer attributes instead of allowing the real builtin.
        allowed.append((_history_buffer_getattr, 'builtins.getattr'))
    except ImportError:
        pass
    try:
        import numpy as np
        allowed += [np.dtype, np.ndarray, type(np.dtype('float64')), type(np.dtype('float32')),
                    type(np.dtype('int64')), type(np.dtype('int32')), type(np.dtype('bool'))]
        try:
            from numpy._core.multiarray import _reconstruct, scalar
        except ImportError:  # numpy < 2
            from numpy.core.multiarray import _reconstruct, scalar
        allowed += [_reconstruct, scalar]
    except ImportError:
        pass
    return allowed


def allow_official_checkpoint_globals() -> bool:
    """Register the allow-list with ``torch.serialization`` (idempotent).

    Returns False on torch versions without ``add_safe_globals`` (< 2.4), where
    ``weights_only`` is not the default anyway.
    """
    global _APPLIED
    if _APPLIED:
        return True
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:
        return False
    for item in _allow_list():
        try:
            add([item])
        except (TypeError, ValueError):  # tuple form needs torch >= 2.6
            pass
    _APPLIED = True
    return True
