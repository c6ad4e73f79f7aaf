"""Tensor-layout helpers: ``Permute`` as a module, so layouts can sit in an ``nn.Sequential``."""
import torch
from torch import nn


class Permute(nn.Module):
    """``x.permute(*dims)``; no parameters (a placeholder slot in official ``nn.Sequential`` names)."""

    def __init__(self, *dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)

    def extra_repr(self) -> str:
        return ', '.join(map(str, self.dims))


def to_channels_last(channel_first: bool) -> nn.Module:
    """NCHW -> NHWC when the surrounding model is channel-last, else the identity."""
    return nn.Identity() if channel_first else Permute(0, 2, 3, 1)


def to_channels_first(channel_first: bool) -> nn.Module:
    """NHWC -> NCHW when the surrounding model is channel-last, else the identity."""
    return nn.Identity() if channel_first else Permute(0, 3, 1, 2)
