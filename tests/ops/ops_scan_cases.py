"""Shared helpers for the selective-scan tests: input factories, ground truth, tolerances."""
import os
import subprocess
import sys

import pytest
import torch

from mmvssm.ops import available_backends, selective_scan_ref_math

FP32_TOL = dict(rtol=6e-4, atol=2e-3)
BF16_TOL = dict(rtol=3e-2, atol=5e-2)
GRAD_NAMES = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')


HERE = os.path.dirname(os.path.abspath(__file__))
ISA_ENV = {'auto': {}, 'avx2': {'MMVSSM_NO_AVX512': '1'}}  # the cpu kernels' run-time choice, or AVX2 forced


def run_isa_script(script, isa, path):
    """Run ``script`` (argv: output path, this folder) in a fresh process with the ``isa`` kernels
    (``ISA_ENV``); returns what it ``torch.save``d to ``path``."""
    env = dict(os.environ, **ISA_ENV[isa])
    res = subprocess.run([sys.executable, '-c', script, str(path), HERE], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return torch.load(path, weights_only=False)


def backend_params(names=('cpu', 'torch', 'ref')):
    """pytest params, one per backend; a backend unavailable here is skipped with its reason."""
    avail = available_backends()
    params = []
    for name in names:
        ok, reason = avail[name]
        marks = () if ok else (pytest.mark.skip(reason=f'backend {name!r} unavailable: {reason}'),)
        params.append(pytest.param(name, id=name, marks=marks))
    return params


def make_inputs(batch, dim, L, N, groups=None, *, with_D=True, with_z=True, with_bias=True,
                softplus=True, dtype=torch.float32, seed=0, stress=False):
    """Random inputs; ``groups=None`` -> shared (B, N, L) B/C, else grouped (B, G, N, L)."""
    g = torch.Generator().manual_seed(seed)

    def rn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    u = rn(batch, dim, L)
    if stress:  # A = -exp(U[0, 4]) (|A| up to ~55), delta up to 3
        A = -torch.exp(torch.rand(dim, N, generator=g, dtype=torch.float64) * 4)
        delta = torch.rand(batch, dim, L, generator=g, dtype=torch.float64) * 3
        if softplus:
            delta = delta.clamp_min(1e-3).expm1().log()  # softplus^-1, so softplus(delta) <= 3
    else:
        A = -torch.exp(torch.rand(dim, N, generator=g, dtype=torch.float64) * 2)
        if softplus:
            delta = torch.randn(batch, dim, L, generator=g, dtype=torch.float64) * 0.5 - 1.0
        else:
            delta = torch.rand(batch, dim, L, generator=g, dtype=torch.float64) * 0.5
    A = A.to(torch.float64 if dtype == torch.float64 else torch.float32)
    delta = delta.to(dtype)
    bshape = (batch, N, L) if groups is None else (batch, groups, N, L)
    B, C = rn(*bshape), rn(*bshape)
    D = rn(dim).to(A.dtype) if with_D else None
    z = rn(batch, dim, L) if with_z else None
    bias = (rn(dim, scale=0.3).to(A.dtype)) if with_bias else None
    return dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=bias, delta_softplus=softplus)


def ground_truth(inputs, grad_out=None):
    """float64 sequential scan of the (possibly low-precision) inputs; grads if ``grad_out`` is given."""
    names = GRAD_NAMES
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many tiny ops: threads only add barrier overhead on a busy machine
    try:
        return _ground_truth(inputs, grad_out, names)
    finally:
        torch.set_num_threads(threads)


def _ground_truth(inputs, grad_out, names):
    leaves = {k: None if inputs[k] is None else inputs[k].detach().to(torch.float64).requires_grad_(grad_out is not None)
              for k in names}
    with torch.set_grad_enabled(grad_out is not None):
        out, last = selective_scan_ref_math(*(leaves[k] for k in names), delta_softplus=inputs['delta_softplus'])
    grads = None
    if grad_out is not None:
        present = [k for k in names if leaves[k] is not None]
        gs = torch.autograd.grad(out, [leaves[k] for k in present], grad_out.to(torch.float64))
        grads = dict(zip(present, gs))
    return out.detach(), last.detach(), grads


def assert_close(actual, expected, what, rtol, atol):
    actual = actual.detach().to(torch.float64)
    expected = expected.to(torch.float64)
    assert actual.shape == expected.shape, f'{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}'
    assert torch.isfinite(actual).all(), f'{what}: non-finite values'
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f'{what}: {m}')


def assert_grad_close(actual, expected, what, rtol, atol):
    """Gradients are sums over batch / time / channels: the absolute tolerance scales with their size."""
    scale = max(1.0, expected.abs().max().item())
    assert_close(actual, expected, what, rtol=rtol * 5, atol=atol * scale)
