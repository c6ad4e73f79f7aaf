"""VMamba's VSS block: ``x + DropPath(SS2D(norm(x)))`` then, if ``mlp_ratio > 0``,
``x + DropPath(MLP(norm2(x)))``. Works in either layout (``channel_first``: NCHW with
``LayerNorm2d``/``Linear2d``; else NHWC with ``nn.LayerNorm``/``nn.Linear``).
"""
import torch
from timm.layers import DropPath
from torch import nn

from .layer_norm_2d import layer_norm
from .linear_2d import linear
from .ss2d import SS2D


class Mlp(nn.Module):
    """``fc2(drop(act(fc1(x))))`` then dropout, in the given layout (VMamba's ``Mlp`` names)."""

    def __init__(self, in_features: int, hidden_features: int, act_layer=nn.GELU,
                 drop: float = 0., channel_first: bool = False):
        super().__init__()
        Linear = linear(channel_first)
        self.fc1 = Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class VSSBlock(nn.Module):
    """Pre-norm SS2D residual block with an optional MLP residual.

    Args:
        dim: channels.
        drop_path: stochastic-depth rate of both residual branches.
        channel_first: NCHW layout.
        mlp_ratio: MLP hidden = ``int(dim * mlp_ratio)``; 0 disables the MLP (vanilla VMamba).
        mlp_act_layer, mlp_drop: MLP activation and dropout.
        norm_eps: eps of the two block norms.
        **ssm_kwargs: :class:`SS2D` settings (``d_state``, ``ssm_ratio``, ``gate``, ...).
    """

    def __init__(self, dim: int, drop_path: float = 0., channel_first: bool = False,
                 mlp_ratio: float = 4.0, mlp_act_layer=nn.GELU, mlp_drop: float = 0.,
                 norm_eps: float = 1e-5, **ssm_kwargs):
        super().__init__()
        Norm = layer_norm(channel_first)
        self.norm = Norm(dim, eps=norm_eps)
        self.op = SS2D(dim, channel_first=channel_first, **ssm_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.mlp_branch = mlp_ratio > 0
        if self.mlp_branch:
            self.norm2 = Norm(dim, eps=norm_eps)
            self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=mlp_act_layer, drop=mlp_drop,
                           channel_first=channel_first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.op(self.norm(x)))
        if self.mlp_branch:
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x
