"""Multi-direction Mamba mixer: Vim's bidirectional "v2" and ARM's 4-scan "v3" in one module.

One input projection, then ``K`` independent selective-scan branches, each on its own token
order and with its own ``conv1d``/``x_proj``/``dt_proj``/``A_log``/``D``, then one output
projection of the mean (``divide_out``) or the sum of the branches brought back to the input
order. Per branch this is exactly mamba-ssm's ``mamba_inner_fn_no_out_proj`` (causal depthwise
conv + SiLU, ``x_proj``, ``dt_proj`` without bias, scan with ``softplus(delta + dt_bias)``, the
``D`` skip and ``silu(z)`` gating), computed on the public :func:`mmvssm.ops.selective_scan`.
All ``K`` branches go through the scan in **one** call (channels stacked, B/C grouped per branch).

Directions and their parameter-name suffixes (the official checkpoint names):

============ ======== ========================================================================
direction    suffix   token order
============ ======== ========================================================================
``row``      ``''``   the sequence as given (row-major patches, cls in the middle)
``row_rev``  ``_b``   reversed (``xz.flip(-1)``)
``col``      ``_c``   column-major patches (real ``H x W`` grid), the extra token kept at its index
``col_rev``  ``_c_b`` reversed column order
============ ======== ========================================================================

Vim v2 = ``VIM_ORDERS = ('row', 'row_rev')`` with ``expand=2``; ARM v3 = ``ARM_ORDERS`` (all four)
with ``expand=1`` (order names and patch orders from :mod:`mmvssm.ops.scan_orders`).

For the column orders the extra (cls) token at ``cls_index`` is held out, the ``H x W`` patch
grid is transposed, and the token is put back at the same index ``cls_index``. ARM's official
code holds out ``L // 2`` and uses ``int(sqrt(L))`` for both sides; for square grids with an even
number of patches (all released models: 14x14, 24x24) that is identical to this. For odd ``M``
the official code holds out a patch token instead of the cls token (``L//2 != M//2``) and only
square grids work; here the real cls index and the real ``H``, ``W`` are used (the official
odd-``M`` result is what this mixer gives when called with ``cls_index = L // 2``).
"""
import math
from functools import lru_cache
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import is_compiling, selective_scan, traceable_only
from ..ops.causal_conv1d import causal_conv1d_silu
from ..ops.scan_orders import VIM_ORDERS, to_sequence

DIRECTION_SUFFIX = {'row': '', 'row_rev': '_b', 'col': '_c', 'col_rev': '_c_b'}


@lru_cache(maxsize=256)
def _order(direction: str, hw: Optional[Tuple[int, int]], seq_len: int,
           cls_index: Optional[int], device: torch.device
           ) -> Optional[Tuple[torch.Tensor, torch.Tensor, bool]]:
    """``(idx, inverse, is_flip)`` for a direction (cached per shape and device); None for
    ``row``; ``is_flip`` for ``row_rev``, the plain reversal of the whole sequence. Built outside
    inference mode even when first asked for inside it: a cached inference tensor could not be
    saved for a later backward (index_select saves its index)."""
    with torch.inference_mode(False):
        idx = _order_index(direction, hw, seq_len, cls_index, device)
        return None if idx is None else (idx, torch.argsort(idx), direction == 'row_rev')


def _order_index(direction: str, hw: Optional[Tuple[int, int]], seq_len: int,
                 cls_index: Optional[int], device) -> Optional[torch.Tensor]:
    """Index ``idx`` (L,) with ``seq_dir = seq[..., idx]``; ``None`` for the identity.

    The patch orders come from :mod:`mmvssm.ops.scan_orders`; the extra token keeps its index in
    the forward orders and the ``_rev`` orders reverse the whole sequence (``xz.flip(-1)``).
    """
    base = direction[:-len('_rev')] if direction.endswith('_rev') else direction
    if base == 'row':
        idx = torch.arange(seq_len, device=device)
    else:
        if hw is None:
            raise ValueError(f'MambaMixer: direction {direction!r} needs the token grid (H, W)')
        h, w = hw
        n_extra = seq_len - h * w
        if n_extra != (0 if cls_index is None else 1):  # one extra token: the cls token
            raise ValueError(f'MambaMixer: {seq_len} tokens do not match a {h}x{w} grid '
                             f'with cls_index={cls_index}')
        pos = torch.arange(h * w, device=device)  # sequence position of patch i (row-major)
        if cls_index is not None:
            pos = pos + (pos >= cls_index).long()
        idx = to_sequence(pos.view(1, 1, h, w), base).view(-1)
        if cls_index is not None:
            cls = torch.full((1,), cls_index, dtype=idx.dtype, device=device)
            idx = torch.cat([idx[:cls_index], cls, idx[cls_index:]])
    if direction == 'row':
        return None
    return idx.flip(0) if direction.endswith('_rev') else idx


def _reorder(seq: torch.Tensor, order: Tuple[torch.Tensor, torch.Tensor, bool],
             inverse: bool = False) -> torch.Tensor:
    """``seq`` ``(..., L)`` in a direction's token order (or back, ``inverse``); a reversal is a
    ``flip`` (a plain reversed copy, cheaper than a gather)."""
    idx, inv, is_flip = order
    if is_flip:
        return seq.flip(-1)
    return seq.index_select(-1, inv if inverse else idx)


def _directions_stack(seq: torch.Tensor, orders, in_place: bool) -> torch.Tensor:
    """``(B, C, L)`` -> ``(B, K*C, L)``: the sequence in each direction's order.

    ``in_place`` (no autograd): one buffer filled in place. Otherwise ``torch.stack`` (in-place
    writes into views of a buffer would keep every block's activations alive under non-reentrant
    activation checkpointing)."""
    b, c, seq_len = seq.shape
    if not in_place:
        return torch.stack([seq if o is None else _reorder(seq, o) for o in orders],
                           dim=1).view(b, len(orders) * c, seq_len)
    out = seq.new_empty(b, len(orders), c, seq_len)
    for i, o in enumerate(orders):
        if o is None:
            out[:, i].copy_(seq)
        else:
            out[:, i].copy_(_reorder(seq, o))
    return out.view(b, len(orders) * c, seq_len)


class MambaMixer(nn.Module):
    """Mamba mixer scanning the tokens in several orders (see module docstring).

    Args:
        d_model: token width ``D``.
        d_state: SSM state size ``N`` (16).
        d_conv: causal depthwise conv width (4).
        expand: ``d_inner = expand * d_model`` (Vim 2, ARM 1).
        dt_rank: ``'auto'`` = ``ceil(d_model / 16)``.
        dt_min, dt_max, dt_init, dt_scale, dt_init_floor: mamba-ssm's ``dt_proj`` init.
        conv_bias, bias: biases of ``conv1d*`` (True) and ``in_proj``/``out_proj`` (False).
        directions: subset/order of ``row``, ``row_rev``, ``col``, ``col_rev``.
        divide_out: average the branches (Vim ``if_divide_out``, ARM always) instead of summing.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: float = 2,
                 dt_rank='auto', dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init: str = 'random', dt_scale: float = 1.0, dt_init_floor: float = 1e-4,
                 conv_bias: bool = True, bias: bool = False,
                 directions: Sequence[str] = VIM_ORDERS, divide_out: bool = True):
        super().__init__()
        bad = [d for d in directions if d not in DIRECTION_SUFFIX]
        if bad or not directions or len(set(directions)) != len(directions):
            raise ValueError(f'MambaMixer: directions must be distinct names out of '
                             f'{list(DIRECTION_SUFFIX)}, got {list(directions)}')
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == 'auto' else int(dt_rank)
        self.directions = tuple(directions)
        self.divide_out = divide_out
        self._dt_init = dict(dt_min=dt_min, dt_max=dt_max, dt_init=dt_init, dt_scale=dt_scale,
                             dt_init_floor=dt_init_floor)
        di, n = self.d_inner, d_state
        self.in_proj = nn.Linear(d_model, 2 * di, bias=bias)
        for d in self.directions:
            s = DIRECTION_SUFFIX[d]
            setattr(self, f'A{s}_log', nn.Parameter(torch.empty(di, n)))
            setattr(self, f'D{s}', nn.Parameter(torch.empty(di)))
            setattr(self, f'conv1d{s}', nn.Conv1d(di, di, d_conv, groups=di, bias=conv_bias,
                                                  padding=d_conv - 1))
            setattr(self, f'x_proj{s}', nn.Linear(di, self.dt_rank + 2 * n, bias=False))
            setattr(self, f'dt_proj{s}', nn.Linear(self.dt_rank, di, bias=True))
        self.out_proj = nn.Linear(di, d_model, bias=bias)
        self.reset_parameters()

    # ----- init (mamba-ssm ``Mamba.__init__``) ---------------------------------------------
    def _branch(self, d: str):
        s = DIRECTION_SUFFIX[d]
        return (getattr(self, f'conv1d{s}'), getattr(self, f'x_proj{s}'),
                getattr(self, f'dt_proj{s}'), getattr(self, f'A{s}_log'), getattr(self, f'D{s}'))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        cfg = self._dt_init
        self.in_proj.reset_parameters()
        self.out_proj.reset_parameters()
        for d in self.directions:
            conv, x_proj, dt_proj, a_log, d_skip = self._branch(d)
            conv.reset_parameters()
            x_proj.reset_parameters()
            std = self.dt_rank ** -0.5 * cfg['dt_scale']
            if cfg['dt_init'] == 'constant':
                nn.init.constant_(dt_proj.weight, std)
            elif cfg['dt_init'] == 'random':
                nn.init.uniform_(dt_proj.weight, -std, std)
            else:
                raise ValueError(f"MambaMixer: unknown dt_init {cfg['dt_init']!r}")
            dt = torch.exp(torch.rand(self.d_inner, device=dt_proj.bias.device)
                           * (math.log(cfg['dt_max']) - math.log(cfg['dt_min']))
                           + math.log(cfg['dt_min'])).clamp(min=cfg['dt_init_floor'])
            dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
            dt_proj.bias._no_reinit = True
            a = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=a_log.device)
            a_log.copy_(torch.log(a).expand_as(a_log))
            d_skip.fill_(1.0)
            a_log._no_weight_decay = True
            d_skip._no_weight_decay = True

    # ----- forward -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, hw: Optional[Tuple[int, int]] = None,
                cls_index: Optional[int] = None) -> torch.Tensor:
        """``x``: ``(B, L, D)``; ``hw``: patch grid (needed by the column directions);
        ``cls_index``: index of the one extra (cls) token in the sequence, if any."""
        b, seq_len, _ = x.shape
        k, di, n, r = len(self.directions), self.d_inner, self.d_state, self.dt_rank
        compiling = is_compiling()
        if not compiling:  # plain ints under jit tracing too (FLOP counting); symbolic when compiling
            seq_len = int(seq_len)
            hw = None if hw is None else (int(hw[0]), int(hw[1]))
        # compiled graphs keep the index math; no cached index tensor under a dispatch mode (fake tensors)
        order = _order.__wrapped__ if traceable_only() else _order
        orders = [order(d, hw, seq_len, cls_index, x.device) for d in self.directions]
        grad = torch.is_grad_enabled()
        if grad:
            # under autograd a Linear: the broadcast matmul below kept every block's activations
            # alive under non-reentrant activation checkpointing (Vim-S 1024x1024 training step:
            # 3.3 GB instead of 1.8 GB)
            xz = self.in_proj(x).transpose(1, 2)
        else:  # in_proj directly in the (B, 2*Di, L) layout the scan reads, as mamba-ssm does
            xz = torch.matmul(self.in_proj.weight, x.transpose(1, 2))
            if self.in_proj.bias is not None:
                xz = xz + self.in_proj.bias[:, None]
        u, z = (_directions_stack(part, orders, in_place=not grad)
                for part in xz.split(di, dim=1))  # (B, K*Di, L) each
        branches = [self._branch(d) for d in self.directions]
        conv_w = torch.cat([br[0].weight for br in branches], 0)
        conv_b = (torch.cat([br[0].bias for br in branches], 0)
                  if branches[0][0].bias is not None else None)
        u = causal_conv1d_silu(u, conv_w.view(k * di, self.d_conv), conv_b)
        u4 = u.view(b, k, di, seq_len)
        x_proj_w = torch.stack([br[1].weight for br in branches], 0)  # (K, R+2N, Di)
        x_dbl = torch.matmul(x_proj_w, u4)  # (B, K, R+2N, L)
        dt, bs, cs = torch.split(x_dbl, [r, n, n], dim=2)
        dt_w = torch.stack([br[2].weight for br in branches], 0)  # (K, Di, R)
        delta = torch.matmul(dt_w, dt).view(b, k * di, seq_len)
        a = -torch.exp(torch.cat([br[3] for br in branches], 0).float())  # (K*Di, N)
        d_skip = torch.cat([br[4] for br in branches], 0).float()
        dt_bias = torch.cat([br[2].bias for br in branches], 0).float()
        y = selective_scan(u, delta, a, bs.contiguous(), cs.contiguous(), D=d_skip,
                           z=z, delta_bias=dt_bias, delta_softplus=True)
        y = y.view(b, k, di, seq_len)
        out = None
        for i, o in enumerate(orders):
            yi = y[:, i] if o is None else _reorder(y[:, i], o, inverse=True)
            out = yi if out is None else out + yi
        if self.divide_out:
            out = out / k
        return F.linear(out.transpose(1, 2), self.out_proj.weight, self.out_proj.bias)

    def extra_repr(self) -> str:
        return (f'd_model={self.d_model}, d_inner={self.d_inner}, d_state={self.d_state}, '
                f'dt_rank={self.dt_rank}, directions={self.directions}, '
                f'divide_out={self.divide_out}')
