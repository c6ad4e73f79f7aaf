"""Stride-2 downsampling between stages. Every layer gives ``ceil(H/2) x ceil(W/2)`` for any H, W.

- :class:`ConvDownsample`: conv3x3 s2 p1 -> LN on NHWC tensors, timm/MambaOut names (``conv``, ``norm``).
- :class:`PatchMerging2D` (VMamba ``downsample_version='v1'``, Swin): 2x2 neighbours concatenated
  (order ``[0::2,0::2], [1::2,0::2], [0::2,1::2], [1::2,1::2]``) -> LN(4C) -> linear (no bias);
  odd sizes are zero-padded at the bottom/right, as in VMamba.
- :class:`ConvDownsample2D` (VMamba ``'v2'``: conv2x2 s2; ``'v3'``: conv3x3 s2 p1) -> norm, in
  VMamba's ``nn.Sequential`` slots (``1`` conv, ``3`` norm); the 2x2 conv pads odd sizes first.

VMamba layers take and return the model's layout (NCHW when ``channel_first`` else NHWC).
"""
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .permute import to_channels_first, to_channels_last


class ConvDownsample(nn.Module):
    """conv3x3 stride 2 then norm; ``(B, H, W, C)`` in and out."""

    def __init__(self, in_chans: int, out_chans: int, norm_layer=partial(nn.LayerNorm, eps=1e-6)):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, kernel_size=3, stride=2, padding=1)
        self.norm = norm_layer(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.norm(x)


class PatchMerging2D(nn.Module):
    """Swin/VMamba patch merging: ``(.., H, W, C) -> (.., ceil(H/2), ceil(W/2), out_chans)``."""

    def __init__(self, dim: int, out_dim: int = -1, norm_layer=nn.LayerNorm,
                 channel_first: bool = False):
        super().__init__()
        self.channel_first = channel_first
        self.reduction = nn.Linear(4 * dim, 2 * dim if out_dim < 0 else out_dim, bias=False)
        self.norm = norm_layer(4 * dim)  # applied channel-last: pass nn.LayerNorm, not LayerNorm2d

    @staticmethod
    def merge(x: torch.Tensor) -> torch.Tensor:
        """Concatenate 2x2 neighbours of a channel-last map (zero-pad odd sizes)."""
        H, W = x.shape[-3:-1]
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        return torch.cat([x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :],
                          x[..., 0::2, 1::2, :], x[..., 1::2, 1::2, :]], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_first:
            x = x.permute(0, 2, 3, 1)
        x = self.reduction(self.norm(self.merge(x)))
        return x.permute(0, 3, 1, 2) if self.channel_first else x


class ConvDownsample2D(nn.Sequential):
    """Strided conv then norm (slots ``0`` layout, ``1`` conv, ``2`` layout, ``3`` norm)."""

    def __init__(self, dim: int, out_dim: int, kernel_size: int = 3, norm_layer=nn.LayerNorm,
                 channel_first: bool = False):
        if kernel_size not in (2, 3):
            raise ValueError(f'ConvDownsample2D: kernel_size must be 2 (v2) or 3 (v3), got {kernel_size}')
        super().__init__(
            to_channels_first(channel_first),
            nn.Conv2d(dim, out_dim, kernel_size=kernel_size, stride=2, padding=kernel_size // 2 if kernel_size == 3 else 0),
            to_channels_last(channel_first),
            norm_layer(out_dim),
        )
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self[0](x)
        if self.kernel_size == 2 and (x.shape[2] % 2 or x.shape[3] % 2):
            x = F.pad(x, (0, x.shape[3] % 2, 0, x.shape[2] % 2))
        return self[3](self[2](self[1](x)))
