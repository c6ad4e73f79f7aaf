"""Convolutional stems (stride 4) of the hierarchical backbones.

- :class:`ConvStem`: conv3x3 s2 (C/2) -> LN -> GELU -> conv3x3 s2 (C) -> LN, timm/MambaOut names
  (``conv1``, ``norm1``, ``conv2``, ``norm2``); output channel-last.
- :class:`PatchifyStem` (VMamba ``patchembed_version='v1'``): conv k=s=patch -> norm; pads H/W up to
  a multiple of the patch so any size works (output ``ceil(H/p) x ceil(W/p)``).
- :class:`OverlapStem` (VMamba ``'v2'``): the two-conv stem, as an ``nn.Sequential`` whose parameter
  slots keep VMamba's indices (``0`` conv, ``2`` norm, ``5`` conv, ``7`` norm).

The two VMamba stems return the layout of the model (NCHW when ``channel_first`` else NHWC); the
norms are given as a class (``LayerNorm2d`` for channel-first, ``nn.LayerNorm`` for channel-last).
"""
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .permute import Permute, to_channels_last


class ConvStem(nn.Module):
    """Two 3x3 stride-2 convs (InternImage / MambaOut stem); NCHW in, NHWC out."""

    def __init__(self, in_chans: int = 3, out_chans: int = 96, act_layer=nn.GELU,
                 norm_layer=partial(nn.LayerNorm, eps=1e-6)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, out_chans // 2, kernel_size=3, stride=2, padding=1)
        self.norm1 = norm_layer(out_chans // 2)
        self.act = act_layer()
        self.conv2 = nn.Conv2d(out_chans // 2, out_chans, kernel_size=3, stride=2, padding=1)
        self.norm2 = norm_layer(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.norm1(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = self.conv2(self.act(x))
        return self.norm2(x.permute(0, 2, 3, 1))


class PatchifyStem(nn.Sequential):
    """Non-overlapping ``patch_size`` conv then norm (slots ``0`` conv, ``1`` layout, ``2`` norm)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 4, norm_layer=nn.LayerNorm,
                 channel_first: bool = False, patch_norm: bool = True):
        super().__init__(
            nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size),
            to_channels_last(channel_first),
            norm_layer(embed_dim) if patch_norm else nn.Identity(),
        )
        self.patch_size = patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        pad_h, pad_w = (-x.shape[2]) % p, (-x.shape[3]) % p
        if pad_h or pad_w:  # right/bottom zero padding, as mmdet's Swin PatchEmbed
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return super().forward(x)


class OverlapStem(nn.Sequential):
    """conv(k=p/2+1, s=p/2) -> norm -> GELU -> conv -> norm, in VMamba's ``nn.Sequential`` slots."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 4, norm_layer=nn.LayerNorm,
                 channel_first: bool = False, patch_norm: bool = True):
        stride = patch_size // 2
        kernel = stride + 1
        # VMamba only permutes around the middle norm when there is one to apply
        mid_cl = nn.Identity() if (channel_first or not patch_norm) else Permute(0, 2, 3, 1)
        mid_cf = nn.Identity() if (channel_first or not patch_norm) else Permute(0, 3, 1, 2)
        super().__init__(
            nn.Conv2d(in_chans, embed_dim // 2, kernel_size=kernel, stride=stride, padding=1),
            mid_cl,
            norm_layer(embed_dim // 2) if patch_norm else nn.Identity(),
            mid_cf,
            nn.GELU(),
            nn.Conv2d(embed_dim // 2, embed_dim, kernel_size=kernel, stride=stride, padding=1),
            to_channels_last(channel_first),
            norm_layer(embed_dim) if patch_norm else nn.Identity(),
        )


__all__ = ['ConvStem', 'PatchifyStem', 'OverlapStem']
