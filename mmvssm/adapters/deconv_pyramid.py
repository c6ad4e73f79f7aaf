"""Vim segmentation's ``fpn1..fpn4`` (BEiT-style): one map per out_index, x4 / x2 / x1 / /2.

From Vim's ``seg/backbone/vim.py`` (anchors.md §1.4), for a stride-16 backbone:
    ``fpn1`` = ConvT(C, C, 2, 2) -> norm -> GELU -> ConvT(C, C, 2, 2)   (stride 4)
    ``fpn2`` = ConvT(C, C, 2, 2)                                        (stride 8)
    ``fpn3`` = identity                                                 (stride 16)
    ``fpn4`` = MaxPool(2)                                               (stride 32)
and for a stride-8 backbone ``fpn1`` = ConvT, ``fpn2`` = identity, ``fpn3`` = MaxPool(2),
``fpn4`` = MaxPool(4). ``fpn_i`` is applied to the ``i``-th backbone map (a single map is used
for all four levels, as the official code does). Differences from the official module: the
norm is configurable (official: hard-coded SyncBN, default here BN), ``out_channels`` may differ
from ``C`` (the last ConvT outputs it, identity/max-pool levels get a 1x1 conv), and max-pooling
uses ``ceil_mode=True`` so odd sizes keep their last row/column. Module indices inside
``fpn1`` (``0``: ConvT, ``1``: norm, ``3``: ConvT) are the official ones.
"""
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from .norm import build_norm2d


class DeconvPyramid(nn.Module):
    """Four maps of a plain backbone -> strides 4/8/16/32 (plain ``nn.Module``).

    Args:
        in_channels: channels of the backbone maps.
        out_channels: channels of the outputs (default: ``in_channels``, as the official code).
        in_stride: stride of the backbone maps, 16 or 8.
        norm_cfg: norm inside ``fpn1`` (see :func:`~mmvssm.adapters.norm.build_norm2d`).
    """
    out_strides = (4, 8, 16, 32)

    def __init__(self, in_channels: int, out_channels: Optional[int] = None,
                 in_stride: int = 16, norm_cfg: Optional[dict] = dict(type='BN')):
        super().__init__()
        c = in_channels
        out = out_channels or in_channels
        self.in_channels, self.out_channels, self.in_stride = c, out, in_stride
        if in_stride not in (8, 16):
            raise ValueError(f'DeconvPyramid: in_stride must be 16 or 8, got {in_stride}')

        def up4():
            return nn.Sequential(nn.ConvTranspose2d(c, c, 2, 2), build_norm2d(norm_cfg, c),
                                 nn.GELU(), nn.ConvTranspose2d(c, out, 2, 2))

        def up2():
            return nn.ConvTranspose2d(c, out, 2, 2)

        def keep(pool: int = 1):
            ops = [nn.MaxPool2d(pool, pool, ceil_mode=True)] if pool > 1 else []
            if out != c:
                ops.append(nn.Conv2d(c, out, 1))
            return nn.Sequential(*ops) if ops else nn.Identity()

        if in_stride == 16:
            self.fpn1, self.fpn2, self.fpn3, self.fpn4 = up4(), up2(), keep(), keep(2)
        else:
            self.fpn1, self.fpn2, self.fpn3, self.fpn4 = up2(), keep(), keep(2), keep(4)

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        if isinstance(inputs, torch.Tensor):
            inputs = (inputs,)
        inputs = tuple(inputs)
        if len(inputs) == 1:
            inputs = inputs * 4
        if len(inputs) != 4:
            raise ValueError(f'DeconvPyramid expects 1 or 4 maps, got {len(inputs)}')
        for x in inputs:
            if x.dim() != 4 or x.shape[1] != self.in_channels:
                raise ValueError(f'DeconvPyramid expects (B, {self.in_channels}, H, W) maps, '
                                 f'got {tuple(x.shape)}')
        if any(x.shape != inputs[0].shape for x in inputs[1:]):  # (traced sizes: no set())
            raise ValueError(f'DeconvPyramid expects 4 maps of one shape (a plain backbone\'s '
                             f'stride-{self.in_stride} maps), got '
                             f'{[tuple(x.shape) for x in inputs]}')
        return tuple(f(x) for f, x in zip((self.fpn1, self.fpn2, self.fpn3, self.fpn4), inputs))
