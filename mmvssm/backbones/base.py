"""The uniform backbone API shared by Vim, VSSM, MambaOut and ARM.

Plain ``nn.Module`` (no mmengine needed); mmengine's runner finds ``init_weights``
and ``init_cfg`` on it exactly as on a ``BaseModule``.
"""
import copy
import numbers
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.utils.checkpoint as cp
from torch import nn

from ..utils.checkpoint import (extract_state_dict, load_checkpoint_file, load_state_dict_strict,
                                strip_prefixes)


def resolve_arch(arch_zoo: Dict[str, dict], arch: Union[str, dict], overrides: dict,
                 family: str) -> dict:
    """Preset ``arch`` (a name in ``arch_zoo`` or a full dict) with non-None ``overrides`` applied."""
    if isinstance(arch, str):
        if arch not in arch_zoo:
            raise KeyError(f'{family}: unknown arch {arch!r}; choose one of {sorted(arch_zoo)} '
                           'or pass a dict of settings')
        cfg = copy.deepcopy(arch_zoo[arch])
    elif isinstance(arch, dict):
        cfg = copy.deepcopy(arch)
    else:
        raise TypeError(f'{family}: arch must be a str or a dict, got {type(arch).__name__}')
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return cfg


def check_image(x: torch.Tensor, in_chans: int, family: str) -> None:
    """Validate a ``(B, C, H, W)`` image batch with a clear message. Any ``H, W >= 1``: every
    backbone pads what its stem or patch embedding needs (one patch at least)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f'{family} expects a (B, C, H, W) image tensor, got {shape}')
    if x.shape[0] == 0:
        raise ValueError(f'{family}: empty batch (input shape {tuple(x.shape)})')
    if x.shape[1] != in_chans:
        raise ValueError(f'{family} expects {in_chans} input channels, got {x.shape[1]} '
                         f'(input shape {tuple(x.shape)})')
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f'{family}: empty image (input shape {tuple(x.shape)})')


def index_tuple(indices, what: str, family: str) -> Tuple[int, ...]:
    """An int or a sequence of ints as a tuple; ``ValueError`` naming ``family`` otherwise."""
    if isinstance(indices, numbers.Integral) and not isinstance(indices, bool):
        return (int(indices), )
    if isinstance(indices, (str, bytes)) or not hasattr(indices, '__iter__'):
        raise ValueError(f'{family}: {what} must be an int or a sequence of ints, got {indices!r}')
    indices = tuple(indices)
    if any(not isinstance(i, numbers.Integral) or isinstance(i, bool) for i in indices):
        raise ValueError(f'{family}: {what} must be ints, got {indices!r}')
    return tuple(int(i) for i in indices)


def check_frozen_stages(frozen_stages, num_stages: int, family: str) -> int:
    """``frozen_stages`` in ``[-1, num_stages]`` (-1: nothing frozen), else ``ValueError``."""
    if not isinstance(frozen_stages, numbers.Integral) or isinstance(frozen_stages, bool) or \
            not -1 <= frozen_stages <= num_stages:
        raise ValueError(f'{family}: frozen_stages must be an int in [-1, {num_stages}], '
                         f'got {frozen_stages!r}')
    return int(frozen_stages)


class BaseBackbone(nn.Module):
    """Common API: ``forward(x) -> tuple of NCHW maps``, official-checkpoint loading, layer ids.

    Subclasses define:
        ``convert_official(state_dict) -> state_dict``: official (or timm) names -> ours;
        ``ALLOWED_MISSING`` / ``ALLOWED_UNEXPECTED``: fnmatch patterns tolerated on load
            (e.g. the classifier head), everything else is a hard error;
        ``num_layers`` and ``get_layer_id(name)``: for layer-wise lr decay
            (0 = embeddings, 1..num_layers = blocks, num_layers + 1 = everything after);
        ``_frozen_parts()``: what ``frozen_stages`` freezes, then call :meth:`_freeze_stages`.
    """
    frozen_stages: int = -1
    ALLOWED_MISSING: Sequence[str] = ()
    ALLOWED_UNEXPECTED: Sequence[str] = ()

    def __init__(self, init_cfg: Optional[dict] = None):
        super().__init__()
        self.init_cfg = copy.deepcopy(init_cfg)
        self._is_init = False

    @property
    def is_init(self):
        return self._is_init

    @is_init.setter
    def is_init(self, value):
        self._is_init = value

    # ----- checkpoint loading -------------------------------------------------------------
    @classmethod
    def convert_official(cls, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Official checkpoint names -> this implementation's names (identity by default)."""
        return state_dict

    def adapt_state_dict(self, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Instance-level fix-ups after conversion (e.g. resizing position embeddings)."""
        return state_dict

    def load_official(self, checkpoint: Union[str, dict], key: Optional[str] = None,
                      prefix: Optional[str] = None, logger=None) -> Dict[str, list]:
        """Load an official (classification) or mmvssm checkpoint strictly.

        Args:
            checkpoint: a path (``str`` or ``os.PathLike``) or URL, or an already loaded
                checkpoint object.
            key: top-level key (``model``, ``model_ema``, ``state_dict``); auto when None.
            prefix: keep only keys under this prefix (e.g. ``'backbone'`` or ``'backbone.'`` of a
                det/seg checkpoint; the dot is added as mmengine's ``PretrainedInit`` does; when
                no key has it, it is also tried after a DDP ``module.`` prefix).
        """
        is_path = isinstance(checkpoint, (str, os.PathLike))
        source = os.fspath(checkpoint) if is_path else 'checkpoint'
        obj = load_checkpoint_file(source) if is_path else checkpoint
        sd, used = extract_state_dict(obj, key)
        if prefix:
            prefix = prefix if prefix.endswith('.') else prefix + '.'
            if not any(k.startswith(prefix) for k in sd):  # DDP-wrapped: module.backbone.*
                sd = strip_prefixes(sd, ('module.',))
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            if not sd:
                raise ValueError(f'{source}: no key starts with prefix {prefix!r}')
        converted = self.convert_official(strip_prefixes(sd))
        sd = self.adapt_state_dict(converted)
        # what adapt_state_dict filled in from the model (ARM pretraining: cls_token, norm_f)
        # or resized (pos_embed), reported and logged with the load
        adapted = dict(
            initialised=sorted(k for k in sd if k not in converted),
            resized={k: (tuple(converted[k].shape), tuple(sd[k].shape)) for k in sd
                     if k in converted and converted[k].shape != sd[k].shape})
        return load_state_dict_strict(self, sd, self.ALLOWED_MISSING, self.ALLOWED_UNEXPECTED,
                                      source=f'{source} [{used}]', logger=logger, adapted=adapted)

    def init_weights(self):
        """Random init (``_init_weights`` of the subclass), then ``Pretrained`` loading if configured."""
        if hasattr(self, '_init_weights'):
            self._init_weights()
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            ckpt = cfg.get('checkpoint')
            if not ckpt:
                raise ValueError(f'{type(self).__name__}: init_cfg Pretrained needs a "checkpoint"')
            self.load_official(ckpt, key=cfg.get('key'), prefix=cfg.get('prefix'))
        elif cfg is not None and not (isinstance(cfg, dict) and cfg.get('type') in (None, 'Init')):
            raise ValueError(f'{type(self).__name__}: unsupported init_cfg {cfg!r}; '
                             "use dict(type='Pretrained', checkpoint=...)")
        self._is_init = True

    # ----- layer-wise lr decay ------------------------------------------------------------
    num_layers: int = 0

    def get_layer_id(self, name: str) -> int:
        """Layer id of parameter ``name`` (relative to this backbone) for lr decay."""
        raise NotImplementedError

    # ----- frozen stages -----------------------------------------------------------------
    def _frozen_parts(self) -> Tuple[List[nn.Module], List[nn.Parameter]]:
        """``(modules, bare parameters)`` that ``frozen_stages`` freezes."""
        return [], []

    def _freeze_stages(self) -> None:
        """What ``frozen_stages`` names gets ``requires_grad=False`` and stays in eval mode (no
        drop path / dropout), as mmdet's / mmpretrain's ``frozen_stages``."""
        modules, params = self._frozen_parts()
        for m in modules:
            m.eval()
            m.requires_grad_(False)
        for p in params:
            p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self._frozen_parts()[0]:
            m.eval()
        return self

    # ----- memory ------------------------------------------------------------------------
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in backward (activation checkpointing, DDP-safe)."""
        self.grad_checkpointing = enable


def stage_out_indices(out_indices: Sequence[int], num_stages: int, family: str) -> Tuple[int, ...]:
    """Stages to return (an int or ints; negative indices count from the end) as a sorted tuple
    without repeats (maps come in stage order); ``ValueError`` naming ``family`` when empty, not
    ints or out of range."""
    out_indices = index_tuple(out_indices, 'out_indices', family)
    if not out_indices or any(not -num_stages <= i < num_stages for i in out_indices):
        raise ValueError(f'{family}: out_indices {tuple(out_indices)} must index the '
                         f'{num_stages} stages')
    return tuple(sorted({i % num_stages for i in out_indices}))


class StagedBackbone(BaseBackbone):
    """A hierarchical backbone (VSSM, MambaOut): ``depths[i]`` blocks in stage ``i``, the
    outputs of the stages in ``out_indices`` (set with :func:`stage_out_indices`).

    Subclasses define ``_out_map(i, x)``: stage ``i``'s returned map (its out-norm, NCHW),
    ``_stem()``, ``_stage_parts(i)`` (stage ``i``'s blocks and the downsample feeding it) and
    ``_out_norm(i)``, run their stages with :meth:`_run_blocks` and :meth:`_collect`, and call
    :meth:`_freeze` at the end of ``__init__``.

    ``frozen_stages = k`` freezes the stem and stages ``0..k-1`` (with the downsamples feeding
    them and their out-norms); stages after the last returned one are never run and are frozen
    too (DDP-safe: no parameter without a gradient).
    """

    @property
    def num_layers(self) -> int:
        return sum(self.depths)

    def _stem(self) -> nn.Module:
        raise NotImplementedError

    def _stage_parts(self, i: int) -> List[nn.Module]:
        raise NotImplementedError

    def _out_norm(self, i: int) -> Optional[nn.Module]:
        raise NotImplementedError

    def _frozen_parts(self) -> Tuple[List[nn.Module], List[nn.Parameter]]:
        if self.frozen_stages < 0:
            return [], []
        modules = [self._stem()]
        for i in range(self.frozen_stages):
            modules += self._stage_parts(i) + [m for m in [self._out_norm(i)] if m is not None]
        return modules, []

    def _freeze(self) -> None:
        """Freeze ``frozen_stages`` and the stages after the last returned one."""
        for i in range(self.out_indices[-1] + 1, len(self.depths)):
            for m in self._stage_parts(i):
                m.requires_grad_(False)
        self._freeze_stages()

    def _run_blocks(self, blocks, x: torch.Tensor) -> torch.Tensor:
        """The blocks of one stage, each checkpointed when ``grad_checkpointing`` is on (and
        autograd records: the non-reentrant checkpoint needs no input that requires grad)."""
        for block in blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = cp.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x

    def _collect(self, i: int, x: torch.Tensor, outs: list) -> bool:
        """Append stage ``i``'s map to ``outs`` if it is returned; True once the last returned
        stage is done (later stages need not run)."""
        if i in self.out_indices:
            outs.append(self._out_map(i, x))
        return i == self.out_indices[-1]

    def _out_map(self, i: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
