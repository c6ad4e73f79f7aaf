"""MambaOut's Gated CNN block (channel-last), with timm's module names.

``x + DropPath(fc2(act(g) * cat(i, dwconv(c))))`` where ``(g, i, c) = split(fc1(norm(x)))`` with
sizes ``(hidden, hidden - conv_channels, conv_channels)``, ``hidden = int(expansion_ratio * dim)``
and ``conv_channels = int(conv_ratio * dim)`` (Dauphin et al. 2017; MambaOut, Yu & Wang 2024).
"""
from functools import partial

import torch
from timm.layers import DropPath
from torch import nn


class GatedCNNBlock(nn.Module):
    """Gated CNN block on ``(B, H, W, C)`` tensors.

    Args:
        dim: channels C.
        expansion_ratio: hidden width ``int(expansion_ratio * dim)`` (8/3 in MambaOut).
        kernel_size: depthwise conv kernel (7).
        conv_ratio: fraction of ``dim`` channels that go through the depthwise conv (1.0).
        norm_layer: pre-norm (``LayerNorm(eps=1e-6)``).
        act_layer: gate activation (GELU).
        drop_path: stochastic-depth rate of the residual branch.
    """

    def __init__(self, dim: int, expansion_ratio: float = 8 / 3, kernel_size: int = 7,
                 conv_ratio: float = 1.0, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                 act_layer=nn.GELU, drop_path: float = 0.):
        super().__init__()
        hidden = int(expansion_ratio * dim)
        conv_channels = int(conv_ratio * dim)
        if not 0 < conv_channels <= hidden:
            raise ValueError(f'GatedCNNBlock: conv_ratio {conv_ratio} gives {conv_channels} conv '
                             f'channels, must be in (0, hidden={hidden}]')
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f'GatedCNNBlock: kernel_size must be odd (its padding kernel_size // 2 '
                             f'keeps the map size only for odd kernels), got {kernel_size}')
        self.split_indices = (hidden, hidden - conv_channels, conv_channels)
        self.norm = norm_layer(dim)
        self.fc1 = nn.Linear(dim, hidden * 2)
        self.act = act_layer()
        self.conv = nn.Conv2d(conv_channels, conv_channels, kernel_size=kernel_size,
                              padding=kernel_size // 2, groups=conv_channels)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        g, i, c = torch.split(self.fc1(self.norm(x)), self.split_indices, dim=-1)
        c = self.conv(c.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = self.fc2(self.act(g) * torch.cat((i, c), dim=-1))
        return self.drop_path(x) + shortcut
