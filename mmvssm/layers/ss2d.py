"""SS2D: VMamba's 2D selective-scan mixer (Liu et al., NeurIPS 2024).

``in_proj`` -> (split off the gate ``z``) -> depthwise conv -> SiLU -> cross-scan into 4 sequences
[row-major, column-major, reversed row-major, reversed column-major] -> **one** selective-scan call
over ``4 * d_inner`` channels with grouped B/C ``(B, 4, N, L)`` -> cross-merge (sum back in
row-major order) -> ``out_norm`` -> (``* silu(z)``) -> ``out_proj``.

The released models need two variants, chosen by explicit fields rather than VMamba's
``forward_type`` strings:

==================  ==========================  ==============================================
official            ``gate``                     layout (``channel_first``)
==================  ==========================  ==============================================
``v05_noz`` (v2)    False: ``in_proj`` -> d_inner  ``True`` with ``ln2d`` (Linear2d, LayerNorm2d)
``v0`` (vanilla)    True: ``in_proj`` -> 2 d_inner  ``False`` (nn.Linear, nn.LayerNorm, NHWC)
==================  ==========================  ==============================================

Everything else (einsum vs grouped-conv projections, scan backend, fp32 forcing) changes speed,
not results. The scan runs in fp32 (inputs cast, output cast back), as VMamba's ``v0`` does.

Packed SSM parameters keep the official names and shapes (``K = 4``, ``R = dt_rank``):
``x_proj_weight (K, R + 2N, d_inner)``, ``dt_projs_weight (K, d_inner, R)``,
``dt_projs_bias (K, d_inner)``, ``A_logs (K * d_inner, N)``, ``Ds (K * d_inner)``.
"""
import math

import torch
from torch import nn

from ..ops import selective_scan
from ..ops.scan_orders import cross_merge, cross_scan
from .layer_norm_2d import layer_norm
from .linear_2d import linear

#: Number of scan directions of the 2D cross-scan.
K_DIRECTIONS = 4


class SS2D(nn.Module):
    """2D selective-scan mixer on ``(B, H, W, C)`` (channel-last) or ``(B, C, H, W)`` (channel-first).

    Args:
        d_model: channels C in and out.
        d_state: SSM state size N.
        ssm_ratio: ``d_inner = int(ssm_ratio * d_model)``.
        dt_rank: rank R of the delta projection; ``'auto'`` = ``ceil(d_model / 16)``.
        d_conv: depthwise conv kernel before the scan (<= 1: no conv).
        conv_bias: bias of that conv.
        gate: multiply the normalised scan output by ``silu(z)`` from a second ``in_proj`` half.
        channel_first: NCHW layout (``Linear2d``/``LayerNorm2d``) instead of NHWC.
        bias: bias of ``in_proj``/``out_proj``.
        dropout: dropout after ``out_proj``.
        dt_min, dt_max, dt_init_floor, dt_scale: Mamba's delta initialisation.
    """

    def __init__(self, d_model: int, d_state: int = 16, ssm_ratio: float = 2.0, dt_rank='auto',
                 d_conv: int = 3, conv_bias: bool = True, gate: bool = False,
                 channel_first: bool = False, bias: bool = False, dropout: float = 0.,
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                 dt_scale: float = 1.0):
        super().__init__()
        if d_conv > 1 and d_conv % 2 == 0:
            raise ValueError(f'SS2D: d_conv (ssm_conv) must be odd or <= 1, got {d_conv}: its padding '
                             '(d_conv - 1) // 2 keeps the map size only for odd kernels')
        d_inner = int(ssm_ratio * d_model)
        dt_rank = math.ceil(d_model / 16) if dt_rank == 'auto' else int(dt_rank)
        self.d_model, self.d_inner, self.d_state, self.dt_rank = d_model, d_inner, d_state, dt_rank
        self.gate, self.channel_first = gate, channel_first
        self._dt_init = dict(dt_min=dt_min, dt_max=dt_max, dt_init_floor=dt_init_floor, dt_scale=dt_scale)
        K = K_DIRECTIONS

        self.x_proj_weight = nn.Parameter(torch.empty(K, dt_rank + 2 * d_state, d_inner))
        self.A_logs = nn.Parameter(torch.empty(K * d_inner, d_state))
        self.Ds = nn.Parameter(torch.empty(K * d_inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(K, d_inner, dt_rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(K, d_inner))
        for p in (self.A_logs, self.Ds):
            p._no_weight_decay = True

        Linear = linear(channel_first)
        self.in_proj = Linear(d_model, d_inner * (2 if gate else 1), bias=bias)
        self.act = nn.SiLU()
        self.conv2d = nn.Conv2d(d_inner, d_inner, kernel_size=d_conv, padding=(d_conv - 1) // 2,
                                groups=d_inner, bias=conv_bias) if d_conv > 1 else None
        self.out_norm = layer_norm(channel_first)(d_inner)
        self.out_proj = Linear(d_inner, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0. else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self):
        """Official init of the packed SSM parameters (the Linears/norms are left to the model).

        ``x_proj``: ``nn.Linear``'s default ``U(+-1/sqrt(d_inner))``; ``dt_projs``: weight
        ``U(+-dt_scale/sqrt(R))``, bias ``softplus^-1(dt)`` with ``dt ~ logU(dt_min, dt_max)``
        floored at ``dt_init_floor``; ``A = -[1..N]`` (S4D-real) per channel; ``D = 1``.
        """
        cfg = self._dt_init
        with torch.no_grad():
            bound = 1 / math.sqrt(self.d_inner)
            self.x_proj_weight.uniform_(-bound, bound)
            std = self.dt_rank ** -0.5 * cfg['dt_scale']
            self.dt_projs_weight.uniform_(-std, std)
            lo, hi = math.log(cfg['dt_min']), math.log(cfg['dt_max'])
            dt = torch.exp(torch.rand_like(self.dt_projs_bias) * (hi - lo) + lo)
            dt = dt.clamp(min=cfg['dt_init_floor'])
            self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
            a = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=self.A_logs.device)
            self.A_logs.copy_(torch.log(a).expand_as(self.A_logs))
            self.Ds.fill_(1.)

    # ----- the scan ------------------------------------------------------------------------
    def cross_selective_scan(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, d_inner, H, W)`` -> ``(B, d_inner, H, W)``: 4-direction scan, one grouped call."""
        B, D, H, W = x.shape
        K, N, R, L = K_DIRECTIONS, self.d_state, self.dt_rank, H * W
        xs = cross_scan(x).reshape(B, K * D, L)  # (B, K*D, L), direction-major
        # per-direction projections as batched matmuls over the K directions (the same math
        # as VMamba's einsum / grouped 1x1 conv paths; oneDNN's grouped conv1d is far slower)
        x_dbl = torch.matmul(self.x_proj_weight, xs.view(B, K, D, L))  # (B, K, R+2N, L)
        dts, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=2)
        dts = torch.matmul(self.dt_projs_weight, dts).view(B, K * D, L)
        ys = selective_scan(
            xs.float(), dts.float(), -torch.exp(self.A_logs.float()),
            Bs.float().contiguous(), Cs.float().contiguous(), self.Ds.float(),
            delta_bias=self.dt_projs_bias.reshape(-1).float(), delta_softplus=True)
        y = cross_merge(ys.view(B, K, D, L), H, W)
        return y.view(B, D, H, W).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_proj(x)
        z = None
        if self.gate:
            x, z = x.chunk(2, dim=1 if self.channel_first else -1)
            z = self.act(z)
        if not self.channel_first:
            x = x.permute(0, 3, 1, 2)
        if self.conv2d is not None:
            x = self.conv2d(x)
        y = self.cross_selective_scan(self.act(x))
        y = self.out_norm(y if self.channel_first else y.permute(0, 2, 3, 1))
        if z is not None:
            y = y * z
        return self.dropout(self.out_proj(y))

    def extra_repr(self) -> str:
        return (f'd_model={self.d_model}, d_inner={self.d_inner}, d_state={self.d_state}, '
                f'dt_rank={self.dt_rank}, gate={self.gate}, channel_first={self.channel_first}')
