"""Channel-first LayerNorm: normalises a ``(B, C, H, W)`` map over C.

Same parameters (``weight``/``bias`` of shape ``(C,)``) and arithmetic as VMamba's ``LayerNorm2d``
(permute to NHWC, ``F.layer_norm``, permute back), so official ``ln2d`` weights load unchanged and
outputs match bit for bit.
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..ops import is_compiling


class LayerNorm2d(nn.LayerNorm):
    """``nn.LayerNorm(C)`` applied over the channel dim of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        x = x.permute(0, 3, 1, 2)
        # compiled: a contiguous map. With symbolic H and W, inductor (torch 2.14) fails to order the
        # strides of the permuted one ("cannot determine truth value of Relational", pytorch#185871)
        return x.contiguous() if is_compiling() else x


def layer_norm(channel_first: bool):
    """The LayerNorm class for a layout: :class:`LayerNorm2d` (NCHW) or ``nn.LayerNorm`` (NHWC)."""
    return LayerNorm2d if channel_first else nn.LayerNorm
