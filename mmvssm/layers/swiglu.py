"""SwiGLU feed-forward of ARM's ``MambaMLP`` block (names ``w1``/``w2``/``w3`` as the checkpoints)."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class SwiGLU(nn.Module):
    """``w3(silu(w1(x)) * w2(x))``, all three linears with bias.

    Args:
        dim: input and output width.
        hidden_dim: inner width; ARM uses ``dim * 4 * 2 // 3`` (the default).
    """

    def __init__(self, dim: int, hidden_dim: Optional[int] = None, bias: bool = True):
        super().__init__()
        hidden_dim = hidden_dim or dim * 4 * 2 // 3
        self.w1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.w2 = nn.Linear(dim, hidden_dim, bias=bias)
        self.w3 = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))
