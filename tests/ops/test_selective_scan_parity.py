"""Parity of every available backend with a float64 sequential ground truth.

Covering design: one case per (L, B/C layout) pair (6 x 4 = 24 cases); D, N and the five flags
(D, z, delta_bias, softplus, return_last_state) cycle with different periods so that every value of
every axis appears, and every flag value appears with every L and every layout. Two extra channel
counts exercise the C++ kernel's vector + scalar-tail split (D/G not a multiple of 8).
"""
import itertools

import pytest
import torch

from mmvssm.ops import selective_scan

from ops_scan_cases import (BF16_TOL, FP32_TOL, GRAD_NAMES, assert_close, assert_grad_close, backend_params,
                         ground_truth, make_inputs)

LS = (1, 2, 17, 64, 1000, 4097)
LAYOUTS = (None, 1, 2, 4)  # None = shared (B, N, L); else grouped with G groups
DIMS = (4, 64)
STATES = (1, 4, 16)


def _cases():
    cases = []
    for i, (L, groups) in enumerate(itertools.product(LS, LAYOUTS)):
        flags = [(i >> k) & 1 for k in range(5)]
        # rotate flags per L so each value meets each L and each layout
        flags = [bool(f ^ (j % 2 if L % 2 else 0)) for j, f in enumerate(flags)]
        dim = DIMS[i % 2]
        N = STATES[(i // 2) % 3]
        if L == 4097:  # keep the longest sequence affordable for the float64 reference
            dim, N = 4 if i % 2 else 64, 4 if i % 2 else 1
        batch = 2 if L <= 64 else 1
        cases.append(pytest.param(dict(batch=batch, dim=dim, L=L, N=N, groups=groups, with_D=flags[0],
                                       with_z=flags[1], with_bias=flags[2], softplus=flags[3], last=flags[4]),
                                  id=f'L{L}-G{groups}-D{dim}-N{N}-' + ''.join('DzbsR'[k] if f else '_'
                                                                          for k, f in enumerate(flags))))
    # vector + scalar tail channels in one group (C++ kernel: 16 / 8-channel vectors, N = 1: 4, then single channels)
    cases.append(pytest.param(dict(batch=2, dim=20, L=37, N=16, groups=2, with_D=True, with_z=True,
                                   with_bias=True, softplus=True, last=True), id='tail-D20-G2'))
    cases.append(pytest.param(dict(batch=1, dim=12, L=300, N=5, groups=None, with_D=False, with_z=True,
                                   with_bias=False, softplus=True, last=True), id='tail-D12'))
    return cases


CASES = _cases()


def test_covering_design_covers_every_value():
    seen = {k: set() for k in ('L', 'groups', 'dim', 'N', 'with_D', 'with_z', 'with_bias', 'softplus', 'last')}
    for p in CASES:
        for k in seen:
            seen[k].add(p.values[0][k])
    assert seen['L'] >= set(LS) and seen['groups'] >= set(LAYOUTS)
    assert seen['dim'] >= set(DIMS) and seen['N'] >= set(STATES)
    for k in ('with_D', 'with_z', 'with_bias', 'softplus', 'last'):
        assert seen[k] == {True, False}, k


def _run(backend, inp, last, requires_grad):
    args = {k: (None if inp[k] is None else inp[k].detach().clone().requires_grad_(requires_grad))
            for k in GRAD_NAMES}
    res = selective_scan(**args, delta_softplus=inp['delta_softplus'], return_last_state=last, backend=backend)
    out, st = res if last else (res, None)
    return args, out, st


@pytest.mark.parametrize('backend', backend_params())
@pytest.mark.parametrize('case', CASES)
def test_parity_fp32(backend, case):
    case = dict(case)
    last = case.pop('last')
    if backend == 'ref' and case['L'] > 1000:
        pytest.skip('ref backend is the slow baseline; covered at L <= 1000')
    inp = make_inputs(**case, seed=case['L'] + case['dim'])
    args, out, st = _run(backend, inp, last, True)
    gout = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref_out, ref_last, ref_grads = ground_truth(inp, gout)
    assert out.dtype == torch.float32
    assert_close(out, ref_out, 'out', **FP32_TOL)
    if last:
        assert st.shape == (case['batch'], case['dim'], case['N']) and st.dtype == torch.float32
        assert not st.requires_grad
        assert_close(st, ref_last, 'last_state', **FP32_TOL)
    grads = torch.autograd.grad(out, [args[k] for k in ref_grads], gout.to(out.dtype))
    for k, g in zip(ref_grads, grads):
        assert g.dtype == args[k].dtype and g.shape == args[k].shape, k
        assert_grad_close(g, ref_grads[k], f'd{k}', **FP32_TOL)


@pytest.mark.parametrize('backend', backend_params())
@pytest.mark.parametrize('groups', [None, 4])
def test_parity_bf16(backend, groups):
    inp = make_inputs(2, 64, 300, 16, groups, dtype=torch.bfloat16, seed=3)
    args, out, st = _run(backend, inp, True, True)
    assert out.dtype == torch.bfloat16 and st.dtype == torch.float32
    gout = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ref_out, ref_last, ref_grads = ground_truth(inp, gout)
    assert_close(out, ref_out, 'out', **BF16_TOL)
    assert_close(st, ref_last, 'last_state', **BF16_TOL)
    grads = torch.autograd.grad(out, [args[k] for k in ref_grads], gout.to(out.dtype))
    for k, g in zip(ref_grads, grads):
        assert g.dtype == args[k].dtype, k
        assert_grad_close(g, ref_grads[k], f'd{k}', **BF16_TOL)


@pytest.mark.parametrize('backend', backend_params(('cpu', 'torch')))
@pytest.mark.parametrize('groups', [None, 2])
def test_gradcheck_fp64(backend, groups):
    inp = make_inputs(2, 3 if groups is None else 4, 7, 2, groups, dtype=torch.float64, seed=5)
    names = list(GRAD_NAMES)
    tensors = [inp[k].detach().clone().requires_grad_(True) for k in names]

    def fn(*ts):
        return selective_scan(*ts, delta_softplus=True, backend=backend)

    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize('backend', backend_params(('cpu', 'torch')))
def test_fp64_computes_in_fp64(backend):
    inp = make_inputs(1, 16, 200, 4, 2, dtype=torch.float64, seed=6)
    out, st = selective_scan(**{k: inp[k] for k in GRAD_NAMES}, delta_softplus=True, return_last_state=True,
                             backend=backend)
    ref_out, ref_last, _ = ground_truth(inp)
    assert out.dtype == torch.float64 and st.dtype == torch.float64
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(st, ref_last, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('backend', backend_params(('cpu', 'torch')))
def test_stress_long_sequence_finite(backend):
    """A = -exp(U[0, 4]), delta up to 3, L = 64000: no inf / nan anywhere (output, state, gradients)."""
    inp = make_inputs(1, 8, 64000, 4, 2, stress=True, seed=7)
    args, out, st = _run(backend, inp, True, True)
    assert torch.isfinite(out).all() and torch.isfinite(st).all()
    grads = torch.autograd.grad(out.sum(), [args[k] for k in GRAD_NAMES])
    for k, g in zip(GRAD_NAMES, grads):
        assert torch.isfinite(g).all(), f'd{k} has non-finite values'
    # spot check against the float64 ground truth on a prefix (the scan is causal)
    pre = {k: (v[..., :3000].contiguous() if isinstance(v, torch.Tensor) and v.shape[-1] == 64000 else v)
           for k, v in inp.items()}
    ref_out, _, _ = ground_truth(pre)
    assert_close(out[..., :3000], ref_out, 'out prefix', **FP32_TOL)


@pytest.mark.parametrize('backend', backend_params())
def test_output_contiguous(backend):
    """The output is a contiguous (B, D, L) tensor (as mamba-ssm's), so ``out.view(B, -1)`` works: the torch
    backend once returned a slice of its padded chunk layout (L not a multiple of the chunk) or its
    time-major buffer (L <= 64) when z was None."""
    for L, N, with_z, dtype in ((100, 4, False, torch.float32), (60, 4, False, torch.float32),
                                (100, 4, True, torch.float32), (77, 1, False, torch.float32),
                                (100, 4, False, torch.bfloat16)):
        inp = make_inputs(2, 8, L, N, with_z=with_z, dtype=dtype)
        out = selective_scan(**inp, backend=backend)
        assert out.shape == (2, 8, L) and out.dtype == dtype
        assert out.is_contiguous(), (L, N, with_z, dtype, out.stride())
