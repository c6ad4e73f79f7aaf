"""``torch`` backend: a pure-PyTorch chunked two-level selective scan (used when ``mmvssm._C`` is missing).

The sequence (length L, padded to C chunks of T steps with identity steps delta = 0 *after* softplus) is
scanned in three passes, each vectorized over all chunks at once:

1. local scan of every chunk from a zero state -> chunk-end states ``h_end``;
2. sequential carry over the C chunks: ``H_in[c + 1] = P[c] * H_in[c] + h_end[c]`` with
   ``P[c] = exp(A * sum(delta over chunk c))`` (a product of decays <= 1: nothing positive is ever
   exponentiated for A <= 0, unlike cumsum/divide tricks);
3. re-scan every chunk from its entry state ``H_in[c]``, emitting ``y_t = C_t . h_t``.

Python steps: ~2T + C instead of L. Only decays are multiplied, so it is as stable as the sequential scan.
The backward pass is analytic (same two-level structure in reverse), recomputing states slab by slab so
that memory stays bounded. Per-step tensors have the layout (B, G, D/G, C, N).

N = 1 (VMamba v2) forward: ``_forward_n1`` works in the native (B, D, L) layout segment by segment (cache-
sized workspace, every step elementwise, an in-row doubling scan instead of transposes to time-major).
"""
import math
import os
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from ._common import as_4d, broadcast_groups, compute_dtype, empty_large, grads_to_inputs, input_metas, no_autocast
from .math_pages import map_math_constant_pages

# Per-array memory budget (bytes) under which exp(delta A) and delta u B are precomputed for all steps.
_PRECOMPUTE_BYTES = 96 * 2 ** 20
# Memory budget (bytes) for the states kept by one backward slab.
_SLAB_BYTES = 128 * 2 ** 20
# Decays are computed as exp(dt A) = exp2(dt (A log2 e)), A log2 e formed once: ATen's exp2 ran 2.5x as fast
# as its exp on the AMD Zen 4 VM (fp32, 384 x 512: 34 vs 87 us). The argument is rounded twice (A log2 e, then
# the product) where dt A was rounded once: up to |dt A| ulp more relative error in a decay, as in the cpu kernel.
_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453


def chunk_length(L, parallel):
    """Chunk length T for a sequence of length L; ``parallel`` = B * D * N elements per step and chunk."""
    if L <= 64:
        return max(L, 1)
    T = 2 ** int(round(math.log2(math.sqrt(L / 2))))
    T = min(max(T, 16), 256)
    while T > 16 and parallel * math.ceil(L / T) < 65536:
        T //= 2
    return T


class _Layout:
    """Time-major chunked views of the inputs (all in the compute dtype)."""

    def __init__(self, u, dt, A, B, C, T):
        self.Bsz, self.D, self.L = u.shape
        self.G, self.N = B.shape[1], A.shape[1]
        self.Dg = self.D // self.G
        self.T = T
        self.C = math.ceil(self.L / T)
        self.Lp = self.C * T
        pad = self.Lp - self.L
        if pad:
            u, dt = F.pad(u, (0, pad)), F.pad(dt, (0, pad))
            B, C = F.pad(B, (0, pad)), F.pad(C, (0, pad))
        shp = (self.Bsz, self.G, self.Dg, self.C, T)
        # (T, B, G, Dg, C)
        self.dt = dt.reshape(shp).permute(4, 0, 1, 2, 3).contiguous()
        self.u = u.reshape(shp).permute(4, 0, 1, 2, 3).contiguous()
        self.du = self.dt * self.u
        # (T, B, G, 1, C, N)
        bshp = (self.Bsz, self.G, self.N, self.C, T)
        self.B = B.reshape(bshp).permute(4, 0, 1, 3, 2).unsqueeze(3).contiguous()
        self.Cm = C.reshape(bshp).permute(4, 0, 1, 3, 2).unsqueeze(3).contiguous()
        self.A = A.reshape(self.G, self.Dg, 1, self.N)  # broadcasts against (B, G, Dg, C, N)
        self.A2 = self.A * _LOG2E
        nbytes = self.dt.numel() * self.N * self.dt.element_size()
        self.a_all = self.b_all = None
        if nbytes <= _PRECOMPUTE_BYTES:
            self.a_all = torch.exp2(self.dt.unsqueeze(-1) * self.A2)
            self.b_all = self.du.unsqueeze(-1) * self.B

    def a(self, t, sl=slice(None)):
        if self.a_all is not None:
            return self.a_all[t][..., sl, :]
        return torch.exp2(self.dt[t][..., sl].unsqueeze(-1) * self.A2)

    def b(self, t, sl=slice(None)):
        if self.b_all is not None:
            return self.b_all[t][..., sl, :]
        return self.du[t][..., sl].unsqueeze(-1) * self.B[t][..., sl, :]

    def chunk_decay(self):
        """P[c] = exp(A * sum of delta over chunk c), (B, G, Dg, C, N)."""
        return torch.exp2(self.dt.sum(0).unsqueeze(-1) * self.A2)

    def to_bdl(self, x):
        """(T, B, G, Dg, C) -> (B, D, L)."""
        return x.permute(1, 2, 3, 4, 0).reshape(self.Bsz, self.D, self.Lp)[..., :self.L]

    def to_bgnl(self, x):
        """(T, B, G, C, N) -> (B, G, N, L)."""
        return x.permute(1, 2, 4, 3, 0).reshape(self.Bsz, self.G, self.N, self.Lp)[..., :self.L]


def _carry(P, h_end):
    """Entry state of every chunk: H_in[0] = 0, H_in[c + 1] = P[c] H_in[c] + h_end[c] (chunk dim 3)."""
    Pc, hc = P.movedim(3, 0), h_end.movedim(3, 0)
    H = torch.zeros_like(hc[0])
    out = torch.empty_like(hc)
    for c in range(hc.shape[0]):
        out[c] = H
        H = torch.addcmul(hc[c], Pc[c], H)
    return out.movedim(0, 3), H


def _forward(lay, need_y=True):
    """Returns y (T, B, G, Dg, C), last state (B, G, Dg, N), entry states H_in (B, G, Dg, C, N)."""
    shape = (lay.Bsz, lay.G, lay.Dg, lay.C, lay.N)
    if lay.C > 1:
        h = torch.zeros(shape, dtype=lay.dt.dtype, device=lay.dt.device)
        for t in range(lay.T):
            h.mul_(lay.a(t)).add_(lay.b(t))
        H_in, _ = _carry(lay.chunk_decay(), h)
    else:
        H_in = torch.zeros(shape, dtype=lay.dt.dtype, device=lay.dt.device)
    h = H_in.clone()
    y = torch.empty((lay.T,) + shape[:-1], dtype=h.dtype, device=h.device)
    for t in range(lay.T):
        h.mul_(lay.a(t)).add_(lay.b(t))
        if lay.N == 1:
            torch.mul(h[..., 0], lay.Cm[t][..., 0], out=y[t])
        else:
            torch.linalg.vecdot(h, lay.Cm[t], out=y[t])
    return y, h[:, :, :, -1].clone(), H_in  # fresh and contiguous: a view would keep all of h


# N = 1 forward: elements per segment workspace buffer (rows * columns; ~1 MiB in fp32 keeps the
# segment's buffers in L2 on the development VMs), and the window of its in-row doubling scan.
_N1_SEGMENT_ELEMS = 2 ** 18
_N1_WINDOW = 32
# Chunk length of the N = 1 entry states (what the backward recomputes from) for L >= _N1_LONG.
_N1_LONG = 2048
_N1_CHUNK = 32


def _n1_segment(rows, L, T):
    """Columns per segment of the N = 1 forward: a multiple of the chunk length T, 128-512 when L is longer."""
    if L <= 512:
        return L
    return max(T, min(512, max(128, _N1_SEGMENT_ELEMS // rows)) // T * T)


def _forward_n1(u, delta, A, B, C, Dv, delta_bias, delta_softplus, T, keep_states=True):
    """Forward for N = 1 in the native (B, D, L) layout, segment by segment along L, without transposes.

    The state is a scalar per channel, so every step is elementwise. Per segment of S columns (all
    contiguous, shifted-slice ops, no strided access):

    1. ``dt`` = softplus(delta + bias), ``a = exp(dt A)``, ``b = dt u B``; the state before the segment is
       folded into ``b`` of its first step. Unless ``logaddexp`` is the faster softplus (``_logaddexp_is_fast``),
       dt is kept in units of log2 e (``softplus_log2`` of (delta + bias) log2 e, 8 ops instead of 10): then
       a = exp2(dt A), and b and the state carry the factor log2 e, which the output (``y = C h ln 2 + D u``),
       the last state and the entry states drop;
    2. a Hillis-Steele doubling scan within the segment's rows up to a window of W = ``_N1_WINDOW`` steps:
       after it, ``(a_t, b_t)`` maps the state W steps back (or the segment start) to the state after t,
       ``b_t += a_t b_{t-s}``, ``a_t *= a_{t-s}`` for s = 1, 2, ..., W / 2 (the W identity columns left
       of the segment, a = 1 and b = 0, stand for steps before it);
    3. ``h_t = b_t + a_t h_{t-W}``: S / W - 1 steps over (B, D, W) column blocks, in place in ``b``;
    4. ``y = C h + D u``, computed in the workspace and written once.

    Only products of decays are formed, as in the sequential loop. Returns y (B, D, L) (before z), the last
    state (B, G, Dg) and the chunk entry states H_in (B, G, Dg, C, 1) of the chunk length T (what the
    backward expects; None unless ``keep_states``).
    """
    Bsz, D, L = u.shape
    G = B.shape[1]
    Cn = math.ceil(L / T)
    S = _n1_segment(Bsz * D, L, T)
    y = empty_large((Bsz, D, L), u)
    H_in = u.new_empty((Bsz, D, Cn)) if keep_states else None
    log2_units = not (delta_softplus and _logaddexp_is_fast(u))
    unit, scale = (_LOG2E, _LN2) if log2_units else (1.0, 1.0)  # dt (and b, h) in units of 1 / scale
    A3 = A[:, 0].reshape(1, D, 1) * (_LOG2E / unit)  # a = exp2(dt A3)
    bias3 = None if delta_bias is None else delta_bias.reshape(1, D, 1) * unit
    D3 = None if Dv is None else Dv.reshape(1, D, 1)
    ws = _N1Workspace(u, G, S, T)
    h_last = u.new_zeros((Bsz, D, 1))
    for l0 in range(0, L, S):
        m = min(S, L - l0)
        v = ws.views(m)
        ds, us = delta[..., l0:l0 + m], u[..., l0:l0 + m]
        if bias3 is not None:
            torch.add(bias3, ds, alpha=unit, out=v.x)
        else:
            torch.mul(ds, unit, out=v.x)
        if not delta_softplus:
            dt = v.x
        elif log2_units:
            dt = softplus_log2(v.x, out=v.dt, e=v.e, w=v.r)
        else:
            dt = _softplus_logaddexp(v.x, v.dt)
        torch.mul(dt, A3, out=v.a).exp2_()
        torch.mul(dt, us, out=v.b)
        v.b4.mul_(B[:, :, :, l0:l0 + m])
        v.b_first.addcmul_(v.a_first, h_last)
        for b_in, a_in, b_sh, b_out, a_sh, a_out in v.levels:
            torch.addcmul(b_in, a_in, b_sh, out=b_out)
            torch.mul(a_in, a_sh, out=a_out)
        for hc, ac, hp in v.steps:
            torch.addcmul(hc, ac, hp, out=hc)
        if keep_states:
            k0 = l0 // T
            H_in[..., k0] = h_last[..., 0]
            H_in[..., k0 + 1:k0 + v.nk] = v.h_chunk_ends
        h_last.copy_(v.h_end)
        ys, Cs = y[..., l0:l0 + m].view(v.h4.shape), C[:, :, :, l0:l0 + m]
        if D3 is not None:
            torch.addcmul(torch.mul(us, D3, out=v.x).view(v.h4.shape), v.h4, Cs, value=scale, out=ys)
        else:
            torch.mul(v.h4, Cs * scale if log2_units else Cs, out=ys)
    if log2_units:
        h_last.mul_(scale)
        if keep_states:
            H_in.mul_(scale)
    return y, h_last.view(Bsz, G, D // G), None if H_in is None else H_in.view(Bsz, G, D // G, Cn, 1)


class _N1Workspace:
    """Buffers of the N = 1 forward (x, e, r, dt; a, a', b, b' with W identity columns on the left, a = 1 and
    b = 0) and, per segment width m, the views its loop works on (built once: the same for every full
    segment, so the loop does no slicing of its own)."""

    def __init__(self, u, G, S, T):
        self.Bsz, self.D, _ = u.shape
        self.G, self.T, self.W = G, T, _N1_WINDOW
        self.plain = u.new_empty((4, self.Bsz * self.D * S))
        self.padded = u.new_empty((4, self.Bsz, self.D, self.W + S))
        self.padded[:2, ..., :self.W] = 1.0
        self.padded[2:, ..., :self.W] = 0.0
        self._views = {}

    def views(self, m):
        if m not in self._views:
            self._views[m] = self._make(m)
        return self._views[m]

    def _make(self, m):
        Bsz, D, G, T, W = self.Bsz, self.D, self.G, self.T, self.W
        v = SimpleNamespace()
        v.x, v.e, v.r, v.dt = (buf[:Bsz * D * m].view(Bsz, D, m) for buf in self.plain)
        pa, pa2, pb, pb2 = (buf[..., :W + m] for buf in self.padded)
        v.a, v.b = pa[..., W:], pb[..., W:]
        v.b4 = v.b.view(Bsz, G, D // G, m)
        v.a_first, v.b_first = v.a[..., :1], v.b[..., :1]
        v.levels = []
        s = 1
        while s < W:  # b' = b + a shift_s(b), a' = a shift_s(a); then swap the buffers
            v.levels.append((pb[..., W:], pa[..., W:], pb[..., W - s:W + m - s], pb2[..., W:],
                             pa[..., W - s:W + m - s], pa2[..., W:]))
            pa, pa2, pb, pb2 = pa2, pa, pb2, pb
            s *= 2
        a, h = pa[..., W:], pb[..., W:]
        v.steps = [(h[..., c0:c0 + W], a[..., c0:c0 + W], h[..., c0 - W:min(c0, m - W)])
                   for c0 in range(W, m, W)]
        v.nk = math.ceil(m / T)
        v.h_chunk_ends = h[..., T - 1:(v.nk - 1) * T:T]
        v.h_end = h[..., m - 1:m]
        v.h4 = h.view(Bsz, G, D // G, m)
        return v


# MMVSSM_TORCH_SOFTPLUS: which softplus formula the torch backend uses on the CPU (default: timed once).
SOFTPLUS_ENV = 'MMVSSM_TORCH_SOFTPLUS'
SOFTPLUS_FORMULAS = ('logaddexp', 'exp-log')
_logaddexp_choice = {}  # dtype -> whether logaddexp was the faster formula on this CPU


def _logaddexp_is_fast(x):
    """Whether ``torch.logaddexp(x, 0)`` beats the exp / log formula of ``softplus`` on x's device.

    Off the CPU: yes. On the CPU it depends on the CPU, not only on ATen's dispatch level (fp32, 384 x 512):
    an Intel AVX-512 VM 179 vs 288 us, the same VM with ``ATEN_CPU_CAPABILITY=avx2`` 281 vs 296 us; an AMD
    Zen 4 VM with the same AVX-512 dispatch 188-200 vs 308-357 us once ``map_math_constant_pages`` has run,
    and 978-1009 vs 320-341 us before it (ATen's log1p, inside logaddexp, in the slow state that function
    describes). So both are timed once per process and dtype (``_time_softplus_formulas``, ~10 ms), after
    ``map_math_constant_pages``, unless the environment variable ``MMVSSM_TORCH_SOFTPLUS`` names one:
    ``logaddexp`` or ``exp-log`` (their accuracy: ``softplus``).
    """
    if x.device.type != 'cpu':
        return True
    forced = os.environ.get(SOFTPLUS_ENV, '')
    if forced:
        if forced not in SOFTPLUS_FORMULAS:
            raise ValueError(f'{SOFTPLUS_ENV}={forced!r}: expected one of {SOFTPLUS_FORMULAS}, '
                             'or unset to time both once per process')
        return forced == 'logaddexp'
    if x.dtype not in _logaddexp_choice:
        if not map_math_constant_pages():  # while a graph is captured: logaddexp may be in its slow state,
            return _time_softplus_formulas(x.dtype)  # so the choice is not kept for the process
        _logaddexp_choice[x.dtype] = _time_softplus_formulas(x.dtype)
    return _logaddexp_choice[x.dtype]


def _time_softplus_formulas(dtype, shape=(384, 512), rounds=3):
    """Whether ``logaddexp`` is faster than exp / log: best of ``rounds`` alternating calls of each."""
    x = torch.linspace(-8, 4, math.prod(shape), dtype=dtype).view(shape)
    bufs = [torch.empty_like(x) for _ in range(4)]
    best = dict.fromkeys((True, False), math.inf)
    with torch.no_grad():
        for _ in range(rounds):
            for use_logaddexp in best:
                t0 = time.perf_counter()
                _softplus(x, *bufs, use_logaddexp)
                best[use_logaddexp] = min(best[use_logaddexp], time.perf_counter() - t0)
    return best[True] <= best[False]


def softplus(x, out=None, e=None, r=None, w=None):
    """``F.softplus(x)`` (beta 1, threshold 20) = max(x, 0) + log1p(exp(-|x|)).

    Where ``_logaddexp_is_fast``: one ``torch.logaddexp(x, 0)`` (its kernel computes exactly that formula),
    accurate to a few ulp. Elsewhere ``softplus_log2(x log2 e) ln 2``, from exp2 / log2 only, accurate to
    (4 + |x|) ulp (tested).
    Written into ``out`` with the workspaces ``e``, ``r`` and ``w`` (x's shape and dtype) when given, else
    into new tensors.
    """
    return _softplus(x, out, e, r, w, _logaddexp_is_fast(x))


def softplus_log2(xs, out=None, e=None, w=None):
    """log2(1 + 2^xs) = softplus(xs ln 2) log2 e (threshold: xs > 20 log2 e -> xs), from exp2 / log2 only.

    With e = 2^min(xs, 126) and w = 1 + e: log2(w) + (e - (w - 1)) log2 e / w, then the maximum with xs.
    e - (w - 1) is exact (Sterbenz): what rounding w dropped from e, so the sum is accurate also for tiny e.
    For xs > 24, where w - 1 may round, the correction is below an ulp of the result; past the clamp (and
    anywhere log2(w) < xs by rounding) the maximum returns xs; F.softplus's threshold x > 20 gives x, and
    here log2(w) differs from xs by under an ulp there, so no select is needed in fp32 (fp64: a select at
    20 log2 e). 8 ops. Accurate to (4 + |xs|) ulp: exp2's rounded argument adds |xs| ulp to e (as in the
    fused ``cpu`` kernel, whose exp2 argument is rounded the same way). ``out`` must not alias ``xs``;
    workspaces ``e``, ``w``.
    """
    e = torch.clamp(xs, max=126.0, out=e).exp2_()
    w = torch.add(e, 1, out=w)
    e.sub_(torch.sub(w, 1, out=out))  # e - (w - 1): exact, what rounding w dropped from e
    out = torch.log2(w, out=out).addcdiv_(e, w, value=_LOG2E)
    out = torch.maximum(out, xs, out=out)
    return out if xs.dtype == torch.float32 else torch.where(xs > 20 * _LOG2E, xs, out, out=out)


def _softplus(x, out, e, r, w, use_logaddexp):
    if use_logaddexp:
        return _softplus_logaddexp(x, out)
    return softplus_log2(torch.mul(x, _LOG2E, out=r), out, e, w).mul_(_LN2)


def _softplus_logaddexp(x, out=None):
    out = torch.logaddexp(x, x.new_zeros(()), out=out)
    # fp32: log1p(exp(-x)) < 2.1e-9 is below half an ulp of x > 20, so the sum rounds to x exactly;
    # fp64: the threshold needs the select
    return out if x.dtype == torch.float32 else torch.where(x > 20, x, out, out=out)


def _delta(delta, delta_bias, softplus_):
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    return softplus(delta) if softplus_ else delta


def state_chunk_length(L, batch, dim, N):
    """Chunk length T of the entry states the forward keeps for the backward (and of its chunked layout)."""
    if N == 1 and L >= _N1_LONG:
        return _N1_CHUNK
    return chunk_length(L, batch * dim * N)


def entry_states_shape(u, A, B, C):
    """Shape of the entry states H_in the forward keeps: (batch, G, dim / G, ceil(L / T), N), with G the
    larger group count of B and C and T :func:`state_chunk_length` (needs concrete sizes)."""
    batch, dim, L = u.shape
    N = A.shape[1]
    G = max(as_4d(B).shape[1], as_4d(C).shape[1])
    return (batch, G, dim // G, math.ceil(L / state_chunk_length(L, batch, dim, N)), N)


def _compute_operands(u, delta, A, B, C, D, z, delta_bias):
    """The inputs in the compute dtype, B / C as (batch, G, N, L)."""
    cdt = compute_dtype(u.dtype)
    return [None if t is None else t.to(cdt)
            for t in (u, delta, A, as_4d(B), as_4d(C), D, z, delta_bias)]


def torch_scan_forward(inputs, delta_softplus, keep_states):
    """``(out in u's dtype, last state (batch, dim, N), H_in, y)``; ``inputs``: ``u, delta, A, B, C, D, z,
    delta_bias`` as :func:`~mmvssm.ops.selective_scan` takes them. When ``keep_states``: the entry states
    H_in (:func:`entry_states_shape`) and with z the pre-gate output y (batch, dim, L), both in the compute
    dtype, which :func:`torch_scan_backward` takes; else None."""
    u = inputs[0]
    with torch.no_grad(), no_autocast(u.device.type):
        uc, dc, Ac, Bc, Cc, Dc, zc, bc = _compute_operands(*inputs)
        Bc, Cc = broadcast_groups(Bc, Cc, contiguous=False)
        Bsz, D, L = uc.shape
        T = state_chunk_length(L, Bsz, D, Ac.shape[1])
        if Ac.shape[1] == 1:
            y, last, H_in = _forward_n1(uc, dc, Ac, Bc, Cc, Dc, bc, delta_softplus, T, keep_states)
        else:
            dt = _delta(dc, bc, delta_softplus)
            lay = _Layout(uc, dt, Ac, Bc, Cc, T)
            y, last, H_in = _forward(lay)
            y = lay.to_bdl(y)
            if Dc is not None:
                y.addcmul_(uc, Dc[:, None])
        # (B, D, L) contiguous like the other backends' (y is a slice of the padded chunk layout)
        out = (y if zc is None else y * F.silu(zc)).contiguous()
        last = last.reshape(Bsz, D, Ac.shape[1])
    if not keep_states:
        return out.to(u.dtype), last, None, None
    return out.to(u.dtype), last, H_in, (y if zc is not None else None)


def torch_scan_backward(inputs, H_in, y, dout, delta_softplus, metas, needs):
    """Gradients of the 8 inputs from what :func:`torch_scan_forward` kept (None where ``needs[i]`` is False
    or the input was None), each in its input's dtype and shape; ``metas``: ``input_metas(inputs)``."""
    u = inputs[0]
    cdt = compute_dtype(u.dtype)
    with torch.no_grad(), no_autocast(u.device.type):
        ops = _compute_operands(*inputs)
        T = state_chunk_length(u.shape[2], u.shape[0], u.shape[1], ops[2].shape[1])
        grads = _backward(*ops, delta_softplus, dout.to(cdt), H_in, y, T)
    return grads_to_inputs(grads, metas, needs)


class SelectiveScanTorch(torch.autograd.Function):
    """Chunked two-level scan in pure PyTorch with an analytic chunked backward."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, grad_enabled=True):
        inputs = (u, delta, A, B, C, D, z, delta_bias)
        # entry states only when a backward can follow (needs_input_grad is also True under no_grad)
        needs_grad = bool(grad_enabled) and any(ctx.needs_input_grad[:8])
        out, last, H_in, y = torch_scan_forward(inputs, delta_softplus, needs_grad)
        if needs_grad:
            ctx.save_for_backward(*inputs, H_in, y)
            ctx.meta = (delta_softplus, input_metas(inputs))
        ctx.mark_non_differentiable(last)
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        *inputs, H_in, y = ctx.saved_tensors
        delta_softplus, metas = ctx.meta
        grads = torch_scan_backward(inputs, H_in, y, dout, delta_softplus, metas, ctx.needs_input_grad)
        return (*grads, None, None, None)


def _backward(u, delta, A, B, C, D, z, delta_bias, softplus, dout, H_in, y, T):
    B, C = broadcast_groups(B, C, contiguous=False)
    raw = delta if delta_bias is None else delta + delta_bias[:, None]
    dt = globals()['softplus'](raw) if softplus else raw
    dz = None
    if z is not None:
        sz = torch.sigmoid(z)
        dz = dout * y * sz * (1 + z * (1 - sz))
        dy = dout * (z * sz)
    else:
        dy = dout
    dD = None if D is None else (dy * u).sum((0, 2))
    lay = _Layout(u, dt, A, B, C, T)
    Bsz, G, Dg, Cn, N = lay.Bsz, lay.G, lay.Dg, lay.C, lay.N
    Lp = lay.Lp
    dy_t = F.pad(dy, (0, Lp - lay.L)).reshape(Bsz, G, Dg, Cn, T).permute(4, 0, 1, 2, 3).contiguous()

    # reverse pass 1: local reverse scan of every chunk with zero carry -> g_start = a_s * dh_s
    if Cn > 1:
        g = torch.zeros((Bsz, G, Dg, Cn, N), dtype=u.dtype, device=u.device)
        for t in range(T - 1, -1, -1):
            g.add_(dy_t[t].unsqueeze(-1) * lay.Cm[t]).mul_(lay.a(t))
        # carry from the right: Gc[C-1] = 0, Gc[c-1] = g_start[c] + P[c] Gc[c]
        P = lay.chunk_decay()
        Pr, gr = P.flip(3).movedim(3, 0), g.flip(3).movedim(3, 0)
        Gr = torch.empty_like(gr)
        acc = torch.zeros_like(gr[0])
        for c in range(Cn):
            Gr[c] = acc
            acc = torch.addcmul(gr[c], Pr[c], acc)
        Gcar = Gr.movedim(0, 3).flip(3)
    else:
        Gcar = torch.zeros((Bsz, G, Dg, Cn, N), dtype=u.dtype, device=u.device)

    ddt_t = torch.empty_like(lay.dt)
    du_t = torch.empty_like(lay.dt)
    dB_t = torch.empty((T, Bsz, G, Cn, N), dtype=u.dtype, device=u.device)
    dC_t = torch.empty_like(dB_t)
    dA_acc = torch.zeros((Bsz, G, Dg, Cn, N), dtype=u.dtype, device=u.device)
    per_chunk = T * Bsz * G * Dg * N * u.element_size()
    slab = max(1, min(Cn, _SLAB_BYTES // max(per_chunk, 1)))
    A5 = lay.A
    for c0 in range(0, Cn, slab):
        sl = slice(c0, min(Cn, c0 + slab))
        h = H_in[:, :, :, sl]
        hs = []
        for t in range(T):
            h = torch.addcmul(lay.b(t, sl), lay.a(t, sl), h)
            hs.append(h)
        gcar = Gcar[:, :, :, sl]
        for t in range(T - 1, -1, -1):
            a = lay.a(t, sl)
            dyt = dy_t[t][..., sl].unsqueeze(-1)
            dh = torch.addcmul(gcar, dyt, lay.Cm[t][..., sl, :])
            hprev = hs[t - 1] if t > 0 else H_in[:, :, :, sl]
            dC_t[t][..., sl, :] = (dyt * hs[t]).sum(2)
            dB_t[t][..., sl, :] = (dh * lay.du[t][..., sl].unsqueeze(-1)).sum(2)
            s = torch.linalg.vecdot(dh, lay.B[t][..., sl, :])
            w = dh * hprev * a
            ddt_t[t][..., sl] = s * lay.u[t][..., sl] + torch.linalg.vecdot(w, A5.expand_as(w))
            du_t[t][..., sl] = s * lay.dt[t][..., sl]
            dA_acc[:, :, :, sl].addcmul_(w, lay.dt[t][..., sl].unsqueeze(-1))
            gcar = a * dh
    du = lay.to_bdl(du_t)
    if D is not None:
        du = du + dy * D[:, None]
    ddelta = lay.to_bdl(ddt_t)
    if softplus:
        ddelta = ddelta * torch.sigmoid(raw)
    dbias = None if delta_bias is None else ddelta.sum((0, 2))
    dA = dA_acc.sum((0, 3)).reshape(G * Dg, N)
    return du, ddelta, dA, lay.to_bgnl(dB_t), lay.to_bgnl(dC_t), dD, dz, dbias
