"""MambaMixer's fast paths against a plain per-branch formulation (mamba-ssm's
``mamba_inner_fn_no_out_proj`` per direction: F.conv1d, index orders, one scan per branch)."""
import pytest
import torch
import torch.nn.functional as F

from mmvssm.layers.mamba_mixer import MambaMixer, _order, _reorder
from mmvssm.ops.causal_conv1d import causal_conv1d_silu, causal_depthwise_conv1d
from mmvssm.ops.scan_cpu import load_cpu_extension
from mmvssm.ops import selective_scan
from mmvssm.ops.scan_orders import ARM_ORDERS, VIM_ORDERS


@pytest.mark.parametrize('width,seq_len', [(4, 37), (4, 3), (2, 1), (3, 8)])
@pytest.mark.parametrize('bias', [True, False])
def test_causal_depthwise_conv1d_matches_conv1d(width, seq_len, bias):
    torch.manual_seed(0)
    x = torch.randn(2, 6, seq_len, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, width, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True) if bias else None
    got = causal_depthwise_conv1d(x, w, b)
    want = F.conv1d(x, w[:, None], b, padding=width - 1, groups=6)[..., :seq_len]
    torch.testing.assert_close(got, want)
    g = torch.randn_like(got)
    inputs = [x, w] + ([b] if bias else [])
    torch.testing.assert_close(torch.autograd.grad(got, inputs, g),
                               torch.autograd.grad(want, inputs, g))


@pytest.mark.skipif(load_cpu_extension()[0] is None, reason='mmvssm._C not built')
@pytest.mark.parametrize('seq_len', [1, 3, 8, 37, 4097])
@pytest.mark.parametrize('width', [2, 4])
def test_fused_conv_silu_matches_torch(seq_len, width):
    torch.manual_seed(0)
    x = torch.randn(2, 24, seq_len) * 4
    w, b = torch.randn(24, width), torch.randn(24)
    want = F.silu(causal_depthwise_conv1d(x.double(), w.double(), b.double())).float()
    with torch.no_grad():
        got = causal_conv1d_silu(x, w, b)
        got_nb = causal_conv1d_silu(x, w, None)
    torch.testing.assert_close(got, want, rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(
        got_nb, F.silu(causal_depthwise_conv1d(x.double(), w.double(), None)).float(),
        rtol=2e-6, atol=2e-6)
    # with a gradient to compute, the autograd (PyTorch) path runs and agrees
    x.requires_grad_(True)
    torch.testing.assert_close(causal_conv1d_silu(x, w, b), got, rtol=2e-6, atol=2e-6)


@pytest.mark.skipif(load_cpu_extension()[0] is None, reason='mmvssm._C not built')
def test_fused_conv_silu_only_where_it_computes_what_conv1d_does():
    """One call, one result whether or not a gradient is needed: unbatched input, CPU autocast
    (F.conv1d runs in bf16) and torch.func transforms take the F.conv1d path under no_grad too."""
    torch.manual_seed(0)
    w, b = torch.randn(3, 4), torch.randn(3)
    x = torch.randn(2, 3, 17)

    def both(fn):
        with torch.no_grad():
            fast = fn(x)
        slow = fn(x.clone().requires_grad_(True))
        assert fast.dtype == slow.dtype
        torch.testing.assert_close(fast, slow.detach(), rtol=0, atol=0)

    both(lambda t: causal_conv1d_silu(t[0], w, b))  # (C, L)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        both(lambda t: causal_conv1d_silu(t, w, b))
    with torch.no_grad():
        mapped = torch.vmap(lambda t: causal_conv1d_silu(t[None], w, b)[0])(x)
    torch.testing.assert_close(mapped, F.silu(causal_depthwise_conv1d(x, w, b)))


def test_reorder_flip_is_the_reversal():
    o = _order('row_rev', None, 9, None, torch.device('cpu'))
    assert o[2]  # plain reversal detected
    seq = torch.arange(18.).view(1, 2, 9)
    torch.testing.assert_close(_reorder(seq, o), seq.index_select(-1, o[0]))
    torch.testing.assert_close(_reorder(_reorder(seq, o), o, inverse=True), seq)
    oc = _order('col', (3, 3), 10, 4, torch.device('cpu'))
    assert not oc[2]
    torch.testing.assert_close(_reorder(_reorder(seq.new_ones(1, 1, 10).cumsum(-1), oc), oc,
                                        inverse=True), seq.new_ones(1, 1, 10).cumsum(-1))


def reference_forward(m: MambaMixer, x, hw, cls_index):
    """One branch at a time, the way the official Vim/ARM code writes it."""
    b, seq_len, _ = x.shape
    xz = m.in_proj(x).transpose(1, 2)
    out = 0
    for d in m.directions:
        conv, x_proj, dt_proj, a_log, d_skip = m._branch(d)
        o = _order(d, hw, seq_len, cls_index, x.device)
        xzd = xz if o is None else xz.index_select(-1, o[0])
        u, z = xzd.chunk(2, dim=1)
        u = F.silu(conv(u)[..., :seq_len])
        x_dbl = x_proj(u.transpose(1, 2))  # (B, L, R+2N)
        dt, bs, cs = torch.split(x_dbl, [m.dt_rank, m.d_state, m.d_state], dim=-1)
        delta = (dt @ dt_proj.weight.t()).transpose(1, 2)
        y = selective_scan(u, delta, -torch.exp(a_log.float()), bs.transpose(1, 2).contiguous(),
                           cs.transpose(1, 2).contiguous(), D=d_skip.float(), z=z,
                           delta_bias=dt_proj.bias.float(), delta_softplus=True, backend='ref')
        out = out + (y if o is None else y.index_select(-1, o[1]))
    if m.divide_out:
        out = out / len(m.directions)
    return m.out_proj(out.transpose(1, 2))


@pytest.mark.parametrize('directions,expand,hw,cls_index', [
    (VIM_ORDERS, 2, (3, 5), 7),
    (VIM_ORDERS, 2, None, None),
    (ARM_ORDERS, 1, (4, 3), 6),
    (ARM_ORDERS, 1, (3, 3), None),
])
def test_mixer_matches_per_branch_reference(directions, expand, hw, cls_index):
    torch.manual_seed(0)
    m = MambaMixer(16, d_state=4, expand=expand, directions=directions).double()
    for p in m.parameters():  # move every parameter off its init so each one matters
        p.data.add_(torch.randn_like(p) * 0.1)
    seq_len = (15 if hw is None else hw[0] * hw[1]) + (cls_index is not None)
    x = torch.randn(2, seq_len, 16, dtype=torch.float64, requires_grad=True)
    got = m(x, hw=hw, cls_index=cls_index)
    want = reference_forward(m, x, hw, cls_index)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
    g = torch.randn_like(got)
    params = [x] + list(m.parameters())
    for a, b in zip(torch.autograd.grad(got, params, g), torch.autograd.grad(want, params, g)):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize('directions,expand,hw,cls_index', [
    (VIM_ORDERS, 2, (3, 5), 7),
    (ARM_ORDERS, 1, (4, 3), 6),
])
def test_inference_path_matches_reference(directions, expand, hw, cls_index):
    """Without autograd the mixer takes its fast path (in_proj in the scan layout, in-place
    direction buffers, the fused C++ conv + SiLU for fp32): same output as the reference."""
    torch.manual_seed(0)
    m = MambaMixer(16, d_state=4, expand=expand, directions=directions)
    for p in m.parameters():
        p.data.add_(torch.randn_like(p) * 0.1)
    seq_len = hw[0] * hw[1] + 1
    x = torch.randn(2, seq_len, 16)
    with torch.no_grad():
        got = m(x, hw=hw, cls_index=cls_index)
        want = reference_forward(m.double(), x.double(), hw, cls_index).float()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_train_step_after_inference_mode_pass():
    """A first forward under torch.inference_mode caches the column orders' indices; a later training step at
    the same grid size must still backpropagate (cached inference tensors cannot be saved for backward)."""
    _order.cache_clear()
    torch.manual_seed(0)
    m = MambaMixer(16, d_state=4, expand=1, directions=ARM_ORDERS)
    x = torch.randn(2, 4 * 5 + 1, 16)
    with torch.inference_mode():
        m(x, hw=(4, 5), cls_index=10)
    out = m(x.clone().requires_grad_(True), hw=(4, 5), cls_index=10)
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
