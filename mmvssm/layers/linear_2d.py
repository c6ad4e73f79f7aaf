"""A pointwise linear layer on NCHW maps with ``nn.Linear`` parameters (``weight`` is ``(out, in)``).

VMamba's channel-first models store these weights 2-D, so official checkpoints load with no reshape;
``nn.Linear``'s init (and anything matching ``isinstance(m, nn.Linear)``) applies unchanged.
"""
import torch
import torch.nn.functional as F
from torch import nn


class Linear2d(nn.Linear):
    """``nn.Linear`` over the channel dim of a ``(B, C, H, W)`` tensor (a 1x1 convolution)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight[:, :, None, None], self.bias)


def linear(channel_first: bool):
    """The linear class for a layout: :class:`Linear2d` (NCHW) or ``nn.Linear`` (NHWC)."""
    return Linear2d if channel_first else nn.Linear
