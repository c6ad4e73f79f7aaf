"""Absolute position embeddings with a *middle* cls token (Vim, ARM): split, resize, cache.

Vim and ARM store ``pos_embed`` as ``[1, M + 1, D]`` for an ``s x s`` pretraining grid
(``M = s*s``) with the cls token's position at index ``M // 2`` (98 for 14x14), not 0.
Resizing therefore takes the cls entry out at ``M // 2``, resizes the ``M`` grid entries
bicubically without antialiasing (timm's :func:`resample_abs_pos_embed`, i.e. the official
``interpolate_pos_embed``'s ``F.interpolate(bicubic, align_corners=False)``) and, when a full
embedding is wanted, puts the cls entry back at ``M' // 2`` of the new grid.
"""
import math
from collections import OrderedDict
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from timm.layers import resample_abs_pos_embed

from ..ops import is_compiling, traceable_only
from ..utils.checkpoint import CheckpointMismatchError


def square_grid(num_patches: int, what: str = 'pos_embed') -> Tuple[int, int]:
    """``(s, s)`` for ``s*s == num_patches``, else a clear error (checkpoints store square grids)."""
    s = int(round(math.sqrt(num_patches)))
    if s * s != num_patches:
        raise ValueError(f'{what}: {num_patches} grid positions is not a square grid')
    return s, s


def split_middle_cls(pos_embed: torch.Tensor, has_cls: bool = True
                     ) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
    """``[1, M(+1), D]`` -> ``(cls_pos [1, 1, D] or None, patch_pos [1, M, D])``, cls at ``M // 2``."""
    if not has_cls:
        return None, pos_embed
    m = pos_embed.shape[1] - 1
    c = m // 2
    return pos_embed[:, c:c + 1], torch.cat([pos_embed[:, :c], pos_embed[:, c + 1:]], dim=1)


def join_middle_cls(cls_pos: Optional[torch.Tensor], patch_pos: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`split_middle_cls`: insert ``cls_pos`` at index ``M // 2``."""
    if cls_pos is None:
        return patch_pos
    c = patch_pos.shape[1] // 2
    return torch.cat([patch_pos[:, :c], cls_pos, patch_pos[:, c:]], dim=1)


def resize_grid_pos_embed(patch_pos: torch.Tensor, old_hw: Sequence[int],
                          new_hw: Sequence[int]) -> torch.Tensor:
    """Bicubic resize of ``[1, h*w, D]`` grid embeddings (no prefix tokens), any aspect ratio,
    without antialiasing: what the official Vim / ARM ``interpolate_pos_embed`` and ViTDet's
    ``get_abs_pos`` compute. timm's default (antialiased, whose bicubic kernel differs in
    enlarging too) was used before 857f818: models fine-tuned with it see embeddings about 1%
    different (relative norm, smooth embeddings) at sizes other than the stored grid."""
    if not is_compiling():  # ints and this early-out would pin a compiled / exported graph to one size
        old_hw, new_hw = tuple(int(v) for v in old_hw), tuple(int(v) for v in new_hw)
        if old_hw == new_hw:
            return patch_pos
    return resample_abs_pos_embed(patch_pos, list(new_hw), old_size=list(old_hw),
                                  num_prefix_tokens=0, antialias=False)


def resize_middle_cls_pos_embed(pos_embed: torch.Tensor, new_hw: Sequence[int],
                                has_cls: bool = True,
                                old_hw: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Resize a full ``[1, M+1, D]`` middle-cls embedding to a ``new_hw`` grid (checkpoint loading)."""
    cls_pos, patch_pos = split_middle_cls(pos_embed, has_cls)
    old_hw = old_hw or square_grid(patch_pos.shape[1])
    return join_middle_cls(cls_pos, resize_grid_pos_embed(patch_pos, old_hw, new_hw))


def insert_zero_middle_cls(pos_embed: torch.Tensor) -> torch.Tensor:
    """``[1, M, D]`` (no cls) -> ``[1, M+1, D]`` with a zero cls position at ``M // 2``.

    What ARM's fine-tuning does to a pretraining checkpoint (``util/pos_embed.py``).
    """
    return join_middle_cls(pos_embed.new_zeros(1, 1, pos_embed.shape[-1]), pos_embed)


class PosEmbedCache:
    """Per-grid-shape cache of a value derived from a parameter (e.g. a resized ``pos_embed``).

    An entry is used only while the parameter is the same tensor at the same version
    (``data_ptr``/``_version`` change on ``load_state_dict``, optimizer steps and any in-place
    edit), and nothing is cached while autograd would need the graph (the parameter requires
    grad and grad mode is on: training recomputes, which is cheap).
    """

    def __init__(self, max_entries: int = 8):
        self.max_entries = max_entries
        self._store: 'OrderedDict[tuple, torch.Tensor]' = OrderedDict()

    def clear(self) -> None:
        self._store.clear()

    def get(self, param: torch.Tensor, key: tuple, compute: Callable[[], torch.Tensor]):
        if param.requires_grad and torch.is_grad_enabled():
            return compute()
        if param.device.type == 'meta' or traceable_only():  # compiled graphs, fake tensors: computed
            return compute()
        stamp = (param.data_ptr(), param._version, param.device, param.dtype)
        full_key = tuple(key) + stamp
        hit = self._store.get(full_key)
        if hit is not None:
            self._store.move_to_end(full_key)
            return hit
        # drop entries of a previous version of the parameter, then bound the size
        for k in [k for k in self._store if k[len(key):] != stamp]:
            del self._store[k]
        value = compute()
        self._store[full_key] = value
        while len(self._store) > self.max_entries:
            self._store.popitem(last=False)
        return value


def adapt_middle_cls_pos_embed(state_dict: Dict[str, torch.Tensor], model_pos: torch.Tensor,
                               family: str) -> Dict[str, torch.Tensor]:
    """Resize a checkpoint's ``[1, M+1, D]`` ``pos_embed`` to the model's stored square grid.

    The embedding width must already agree (a different width is left for the strict loader
    to report as a size mismatch).
    """
    pe = state_dict.get('pos_embed')
    if pe is None or pe.shape == model_pos.shape or pe.dim() != 3 or \
            pe.shape[-1] != model_pos.shape[-1]:
        return state_dict
    try:
        old = square_grid(pe.shape[1] - 1, f'{family} checkpoint pos_embed')
    except ValueError as e:
        raise CheckpointMismatchError(str(e)) from None
    new = square_grid(model_pos.shape[1] - 1, f'{family} model pos_embed')
    state_dict = dict(state_dict)
    state_dict['pos_embed'] = resize_middle_cls_pos_embed(pe.float(), new, old_hw=old).to(pe.dtype)
    return state_dict


class MiddleClsEmbedMixin:
    """Patch embedding + middle cls token + online-resized absolute position embedding.

    Needs ``self.patch_embed``, ``self.pos_embed`` (``[1, M0+1, D]``), ``self.cls_token``,
    ``self.pretrain_grid``, ``self.use_cls_token``, ``self.pos_drop``, ``self._pos_cache``.
    """

    def _grid_pos_embed(self, hw: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        def compute():
            cls_pos, patch_pos = split_middle_cls(self.pos_embed)
            return cls_pos, resize_grid_pos_embed(patch_pos, self.pretrain_grid, hw)
        return self._pos_cache.get(self.pos_embed, tuple(hw), compute)

    def embed(self, x: torch.Tensor, dense: bool = True
              ) -> Tuple[torch.Tensor, Tuple[int, int], Optional[int]]:
        """Image -> ``(tokens (B, L, D), (h, w), cls_index or None)``."""
        x, hw = self.patch_embed(x, dense=dense)
        cls_pos, patch_pos = self._grid_pos_embed(hw)
        x = x + patch_pos.to(x.dtype)
        cls_index = None
        if self.use_cls_token:
            cls_index = x.shape[1] // 2
            cls = (self.cls_token + cls_pos).to(x.dtype).expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :cls_index], cls, x[:, cls_index:]], dim=1)
        return self.pos_drop(x), hw, cls_index
