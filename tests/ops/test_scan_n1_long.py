"""N = 1 long-sequence paths (VMamba v2 shapes): the torch backend's segmented native-layout forward
(L >= 2048: its own chunk length, padding, several segments) and the C++ kernel's N = 1 path, with grads."""
import pytest
import torch

from mmvssm.ops import selective_scan

from ops_scan_cases import BF16_TOL, FP32_TOL, GRAD_NAMES, assert_close, assert_grad_close, backend_params, ground_truth, make_inputs


@pytest.mark.parametrize('backend', backend_params(('cpu', 'torch')))
@pytest.mark.parametrize('L,groups,flags', [(4100, 4, (True, False, True, True)), (2048, None, (False, True, False, False)),
                                            (6000, 2, (True, True, True, True))])
def test_n1_long(backend, L, groups, flags):
    with_D, with_z, with_bias, softplus = flags
    inp = make_inputs(1, 8 * (groups or 1), L, 1, groups=groups, with_D=with_D, with_z=with_z,
                      with_bias=with_bias, softplus=softplus)
    _check_fp32_with_grads(inp, backend)


@pytest.mark.parametrize('logaddexp', [True, False], ids=['logaddexp', 'log2-units'])
@pytest.mark.parametrize('with_D', [True, False])
def test_n1_torch_softplus_formulas(monkeypatch, logaddexp, with_D):
    """The torch backend's N = 1 forward with either softplus formula: logaddexp in natural units, or
    softplus_log2 with dt, b and the state carried in units of log2 e (the output, the last state and the
    entry states the backward recomputes from drop that factor again), with and without D."""
    from mmvssm.ops import scan_torch
    monkeypatch.setattr(scan_torch, '_logaddexp_is_fast', lambda x: logaddexp)
    inp = make_inputs(1, 8, 4100, 1, groups=2, with_D=with_D, with_z=False, with_bias=True, softplus=True)
    _check_fp32_with_grads(inp, 'torch')


def _check_fp32_with_grads(inp, backend):
    """Output, last state and every gradient of ``backend`` against the float64 ground truth (fp32 tolerances)."""
    leaves = {k: None if inp[k] is None else inp[k].detach().clone().requires_grad_(True) for k in GRAD_NAMES}
    out, last = selective_scan(**leaves, delta_softplus=inp['delta_softplus'], return_last_state=True,
                               backend=backend)
    gout = torch.randn_like(out)
    out.backward(gout)
    ref_out, ref_last, ref_grads = ground_truth(inp, gout)
    assert_close(out, ref_out, 'out', **FP32_TOL)
    assert_close(last, ref_last, 'last_state', **FP32_TOL)
    for k, g in ref_grads.items():
        assert_grad_close(leaves[k].grad, g, f'd{k}', **FP32_TOL)


@pytest.mark.parametrize('backend', backend_params(('cpu',)))
@pytest.mark.parametrize('with_z', [False, True])
def test_n1_streamed_output(backend, with_z):
    """An fp32 N = 1 output of >= 32 MiB with L % 16 == 0 is written with non-temporal stores (the C++
    kernel's streaming path, rows paired into full cache lines with AVX2): it matches the float64 ground truth."""
    L = 65536  # (1, 128, 65536) fp32 = 32 MiB, the kernel's streaming threshold
    inp = make_inputs(1, 128, L, 1, groups=4, with_z=with_z)
    with torch.no_grad():
        out, last = selective_scan(**inp, return_last_state=True, backend=backend)
    ref_out, ref_last, _ = ground_truth(inp)
    assert_close(out, ref_out, 'out', **FP32_TOL)
    assert_close(last, ref_last, 'last_state', **FP32_TOL)


@pytest.mark.parametrize('backend', backend_params(('cpu',)))
@pytest.mark.parametrize('L,dim,groups,with_z,dtype', [(24576, 8, None, True, torch.float32),
                                                    (25088, 12, 2, False, torch.float32),
                                                    (25092, 8, None, True, torch.float32),
                                                    (25600, 8, None, False, torch.bfloat16)])
def test_n1_staggered_rows(backend, L, dim, groups, with_z, dtype):
    """Row strides at which rows collide mod 4 KiB make the C++ kernel stagger the rows of a 4-channel item in
    1 KiB steps (L = 24576: all rows at one offset mod 4 KiB, lags of 0-3 KiB; L = 25088: two offsets, lags
    0 / 1 KiB; L = 25092: offsets 32 bytes apart, with tail steps, L % 8 = 4; bf16 at L = 25600: 50 KiB rows,
    two offsets), with masked first and last blocks and per-row checkpoints for the backward. Output, last
    state and, in fp32, every gradient match the float64 ground truth. dim 12 in 2 groups: one 4-channel
    item and two single channels per group."""
    inp = make_inputs(1, dim, L, 1, groups=groups, with_D=True, with_z=with_z, with_bias=True, softplus=True,
                      dtype=dtype)
    grads = dtype == torch.float32
    leaves = {k: None if inp[k] is None else inp[k].detach().clone().requires_grad_(grads) for k in GRAD_NAMES}
    out, last = selective_scan(**leaves, delta_softplus=True, return_last_state=True, backend=backend)
    gout = torch.randn(out.shape) if grads else None
    if grads:
        out.backward(gout)
    ref_out, ref_last, ref_grads = ground_truth(inp, gout)
    tol = FP32_TOL if grads else BF16_TOL
    assert out.dtype == dtype
    assert_close(out, ref_out, 'out', **tol)
    assert_close(last, ref_last, 'last_state', **tol)
    for k, g in (ref_grads or {}).items():
        assert_grad_close(leaves[k].grad, g, f'd{k}', **FP32_TOL)


def test_n1_torch_short_segments():
    """Many rows make the torch backend's N = 1 forward cut short segments (2 x 1024 rows: 128 columns, so
    16 full segments and a 52-column tail whose last stride block is partial): output, last state and every
    gradient (the backward restarts from the forward's chunk entry states) match the float64 ground truth."""
    from mmvssm.ops.scan_torch import _N1_CHUNK, _n1_segment
    L = 2100
    assert _n1_segment(2 * 1024, L, _N1_CHUNK) == 128
    inp = make_inputs(2, 1024, L, 1, groups=4, with_D=True, with_z=True, with_bias=True, softplus=True)
    _check_fp32_with_grads(inp, 'torch')


def test_n1_torch_states_only_for_backward(monkeypatch):
    """The torch backend's N = 1 forward keeps the chunk entry states only when a backward can follow: under
    no_grad (inputs requiring grad) and for inputs that need none it skips them, with the same output."""
    from mmvssm.ops import scan_torch
    calls = []
    real = scan_torch._forward_n1

    def spy(*args):
        res = real(*args)
        calls.append(res[2] is not None)
        return res

    monkeypatch.setattr(scan_torch, '_forward_n1', spy)
    inp = make_inputs(1, 8, 2100, 1, groups=4, with_D=True, with_bias=True, softplus=True)
    leaves = {k: None if inp[k] is None else inp[k].detach().clone().requires_grad_(True) for k in GRAD_NAMES}
    out_grad = selective_scan(**leaves, delta_softplus=True, backend='torch')
    with torch.no_grad():
        out_nograd = selective_scan(**leaves, delta_softplus=True, backend='torch')
    out_plain = selective_scan(**inp, backend='torch')
    assert calls == [True, False, False]
    assert out_grad.grad_fn is not None and out_nograd.grad_fn is None
    torch.testing.assert_close(out_nograd, out_grad.detach(), rtol=0, atol=0)
    torch.testing.assert_close(out_plain, out_grad.detach(), rtol=0, atol=0)
