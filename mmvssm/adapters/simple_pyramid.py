"""ViTDet's ``SimpleFeaturePyramid``: strides 4/8/16/32 from the last map of a plain backbone.

Li et al., "Exploring Plain Vision Transformer Backbones for Object Detection" (ViTDet); the same
module Vim's detection code uses (anchors.md §1.5). For an input of stride ``in_stride`` and
``C`` channels, each output stride ``s`` is made by
    ``in_stride / s = 4``: ConvT(C, C/2, 2, 2) -> norm -> GELU -> ConvT(C/2, C/4, 2, 2)
    ``2``: ConvT(C, C/2, 2, 2);  ``1``: identity;  ``1/2``, ``1/4``: max-pool 2 / 4
then a 1x1 conv + norm and a 3x3 conv + norm to ``out_channels`` (convs without bias when a
norm follows, as ViTDet). Max-pooling uses ``ceil_mode=True`` so odd sizes keep their last
row/column (ViTDet floors). ``num_outs=5`` adds ViTDet's ``LastLevelMaxPool`` level (stride 64,
``max_pool2d(k=1, s=2)`` of the last level).
"""
import numbers
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .norm import build_norm2d


def _scale_ops(scale: float, channels: int, norm_cfg: Optional[dict]) -> Tuple[nn.Module, int]:
    if scale in (4, 2) and channels < scale:
        raise ValueError(f'SimpleFeaturePyramid: in_channels={channels} is too small for the '
                         f'x{int(scale)} level (it has in_channels / {int(scale)} channels); '
                         f'use in_channels >= {int(scale)}')
    if scale == 4:
        return nn.Sequential(
            nn.ConvTranspose2d(channels, channels // 2, 2, 2),
            build_norm2d(norm_cfg, channels // 2), nn.GELU(),
            nn.ConvTranspose2d(channels // 2, channels // 4, 2, 2)), channels // 4
    if scale == 2:
        return nn.ConvTranspose2d(channels, channels // 2, 2, 2), channels // 2
    if scale == 1:
        return nn.Identity(), channels
    if scale in (0.5, 0.25):
        k = int(round(1 / scale))
        return nn.MaxPool2d(k, k, ceil_mode=True), channels
    raise ValueError(f'SimpleFeaturePyramid: unsupported scale factor {scale} '
                     '(in_stride / out_stride must be 4, 2, 1, 1/2 or 1/4)')


class SimpleFeaturePyramid(nn.Module):
    """ViTDet simple feature pyramid (plain ``nn.Module``).

    Args:
        in_channels: channels of the backbone map.
        out_channels: channels of every output level (256).
        in_stride: stride of the backbone map (16; 8 for the stride-8 Vim models).
        out_strides: output strides, strictly increasing (4, 8, 16, 32).
        in_index: which map of the backbone's tuple to use (the last).
        norm_cfg: see :func:`~mmvssm.adapters.norm.build_norm2d` (``LN`` as ViTDet).
        num_outs: ``len(out_strides)`` or one more (extra max-pooled level, from the coarsest).

    Forward: tuple of NCHW maps -> tuple of ``num_outs`` NCHW maps.
    """

    def __init__(self, in_channels: int, out_channels: int = 256, in_stride: int = 16,
                 out_strides: Sequence[int] = (4, 8, 16, 32), in_index: int = -1,
                 norm_cfg: Optional[dict] = dict(type='LN', eps=1e-6),
                 num_outs: Optional[int] = None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.in_stride, self.out_strides = in_stride, tuple(out_strides)
        self.in_index = in_index
        strides = self.out_strides
        if not strides or any(a >= b for a, b in zip(strides, strides[1:])):
            raise ValueError(f'SimpleFeaturePyramid: out_strides must be strictly increasing '
                             f'(finest first, as mmdet necks), got {strides}')
        if not isinstance(in_index, numbers.Integral) or isinstance(in_index, bool):
            raise TypeError(f'SimpleFeaturePyramid: in_index must be one int (which backbone map '
                            f'to use), got {in_index!r}')
        self.num_outs = num_outs or len(self.out_strides)
        if self.num_outs not in (len(self.out_strides), len(self.out_strides) + 1):
            raise ValueError(f'SimpleFeaturePyramid: num_outs must be {len(self.out_strides)} '
                             f'or {len(self.out_strides) + 1}, got {num_outs}')
        bias = norm_cfg is None
        self.scales = nn.ModuleList()
        self.lateral_convs = nn.ModuleList()
        self.output_convs = nn.ModuleList()
        for s in self.out_strides:
            op, dim = _scale_ops(in_stride / s, in_channels, norm_cfg)
            self.scales.append(op)
            self.lateral_convs.append(nn.Sequential(
                nn.Conv2d(dim, out_channels, 1, bias=bias), build_norm2d(norm_cfg, out_channels)))
            self.output_convs.append(nn.Sequential(
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias),
                build_norm2d(norm_cfg, out_channels)))
        self.init_weights()

    def init_weights(self) -> None:
        """ViTDet's ``c2_xavier_fill`` on the 1x1/3x3 convs (kaiming-uniform a=1, zero bias)."""
        for seq in list(self.lateral_convs) + list(self.output_convs):
            conv = seq[0]
            nn.init.kaiming_uniform_(conv.weight, a=1)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        if isinstance(inputs, torch.Tensor):
            inputs = (inputs,)
        if not -len(inputs) <= self.in_index < len(inputs):
            raise ValueError(f'SimpleFeaturePyramid uses map in_index={self.in_index} but got '
                             f'{len(inputs)} maps; check the backbone\'s out_indices or in_index')
        x = inputs[self.in_index]
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'SimpleFeaturePyramid expects a (B, {self.in_channels}, H, W) map, '
                             f'got {tuple(x.shape)}')
        outs = [out(lat(op(x))) for op, lat, out in
                zip(self.scales, self.lateral_convs, self.output_convs)]
        if self.num_outs > len(outs):
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return tuple(outs)
