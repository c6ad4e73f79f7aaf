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
    leaves = {k: None if inp[k] is None else inp[k].detach().clone().requires_grad_(True) for k in GRAD_NAMES}
    out, last = selective_scan(**leaves, delta_softplus=softplus, return_last_state=True, backend=backend)
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
@pytest.mark.parametrize('L,with_z,dtype', [(16384, True, torch.float32), (16388, False, torch.float32),
                                            (16384, True, torch.bfloat16)])
def test_n1_lagged_rows(backend, L, with_z, dtype):
    """Rows of 64 KiB (L = 16384: every row of an array at the same offset mod 4 KiB) make the C++ N = 1
    forward run each row of an 8-channel item some blocks behind the previous one (n1_row_lag), with
    identity steps before a row starts and after it ends. Outputs, last state and, in fp32, the gradients
    (the backward restarts from the forward's per-lane checkpoints) match the float64 ground truth; also
    with tail steps (L % 8 != 0) and bf16 inputs."""
    inp = make_inputs(1, 16, L, 1, groups=2, with_z=with_z, dtype=dtype)
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
