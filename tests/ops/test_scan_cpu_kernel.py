"""Fast paths of the fused C++ kernel: N = 1 (row-layout elementwise work), long sequences, softplus."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmvssm.ops import available_backends, selective_scan

from ops_scan_cases import FP32_TOL, assert_close, make_inputs, run_isa_script

pytestmark = pytest.mark.skipif(not available_backends()['cpu'][0], reason='mmvssm._C is not built')


def _fp64_torch(inp, softplus, last=False):
    args = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in inp.items() if k != 'delta_softplus'}
    return selective_scan(**args, delta_softplus=softplus, return_last_state=last, backend='torch')


@pytest.mark.parametrize('with_z', [False, True])
def test_n1_long_sequence_large_output(with_z):
    # a long N = 1 sequence with an odd L (row blocks, then a scalar tail); the huge-page advice of outputs
    # over 32 MiB is checked in test_scan_large_outputs.py
    inp = make_inputs(1, 16, 150_003, 1, groups=4, with_z=with_z)
    sp = inp['delta_softplus']
    args = {k: v for k, v in inp.items() if k != 'delta_softplus'}
    out, last = selective_scan(**args, delta_softplus=sp, return_last_state=True, backend='cpu')
    ref_out, ref_last = _fp64_torch(inp, sp, last=True)
    assert out.is_contiguous() and out.shape == inp['u'].shape
    assert_close(out, ref_out, 'out', **FP32_TOL)
    assert_close(last, ref_last, 'last_state', **FP32_TOL)
    out2 = out * 2 + 1  # the storage behaves like any other tensor's
    del out
    assert torch.isfinite(out2).all()


def test_softplus_exact_threshold_semantics():
    # A very negative (decay ~ 0), u = B = C = 1: out[t] = softplus(delta[t]) up to ~1e-38 * out[t - 1];
    # (delta >= softplus(-40) so that the carried term stays negligible); 8 channels x L steps: the
    # vector path and a scalar tail run
    x = torch.cat([torch.linspace(-40, 40, 8001), torch.tensor([19.99, 20.0, 20.0001, 25.0, 88.0, 1e6, -30.5])])
    L = x.numel() // 8
    x = x[:8 * L].view(1, 8, L)
    u = torch.ones_like(x)
    A = torch.full((8, 1), -1e30)
    Bm = torch.ones(1, 1, L)
    out = selective_scan(u, x, A, Bm, Bm.clone(), delta_softplus=True, backend='cpu')
    exp = F.softplus(x.double())
    # exp2(x log2 e) in fp32 has a relative error ~ |x| 2^-24 from rounding x log2 e (2.4e-6 at |x| = 40)
    rel = (out.double() - exp).abs() / exp
    assert (rel <= 1e-6 + x.abs().double() * 7e-8).all(), rel.max()
    big = x > 20
    assert torch.equal(out[big], x[big])


@pytest.mark.parametrize('n', [1, 4])
def test_decay_exp_accuracy(n):
    # Each odd step reads one decay: the even step before it sets h = dt u B = 1024 / 1024 = 1 and wipes
    # the memory (exp(1024 A) ~ 0), the odd one has u = 0, so out = C h = exp(dt A) (C picks state 0).
    # 64 channels x 512 odd steps span dt A in [-87, 0] (dense near 0, where long-memory decays live);
    # vector body and scalar tail both run (L odd). Bound: the kernels' exp2 (max relative error 1.9e-7)
    # plus fp32 rounding of dt (A log2 e), |dt A| 1.2e-7.
    D, T = 64, 512
    A = -torch.logspace(-1, math.log10(87.0), D).view(D, 1).repeat(1, n)
    x = torch.cat([torch.logspace(-6, 0, T // 2), torch.linspace(0.0, 1.0, T // 2)])
    delta = torch.full((1, D, 2 * T + 1), 1024.0)
    delta[..., 1::2] = x
    u = torch.zeros_like(delta)
    u[..., 0::2] = 1.0 / 1024
    Bm = torch.ones(1, n, 2 * T + 1)
    Cm = torch.zeros(1, n, 2 * T + 1)
    Cm[:, 0] = 1.0
    out = selective_scan(u, delta, A, Bm, Cm, backend='cpu')[..., 1::2]
    xa = x.double().view(1, 1, T) * A[:, 0].double().view(1, D, 1)
    exp = xa.exp()
    rel = (out.double() - exp).abs() / exp
    assert (rel <= 2e-7 + 1.2e-7 * xa.abs()).all(), rel.max()


_ISA_SCRIPT = r'''
import sys, torch
from mmvssm import _C
from mmvssm.ops import selective_scan
torch.manual_seed(0)
sys.path.insert(0, sys.argv[2])
from ops_scan_cases import make_inputs
res = dict(avx512=_C.uses_avx512())
for n, L in ((16, 301), (1, 1043)):  # N = 1: its own kernel (16-step row blocks with AVX-512)
    inp = make_inputs(2, 96, L, n, groups=2, with_z=True)
    sp = inp.pop('delta_softplus')
    for k in ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias'):
        inp[k].requires_grad_(True)
    out, last = selective_scan(**inp, delta_softplus=sp, return_last_state=True, backend='cpu')
    grads = torch.autograd.grad(out.sum() + out.pow(2).mean(),
                                [inp[k] for k in ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')])
    res[n] = dict(out=out.detach(), last=last, grads=grads)
torch.save(res, sys.argv[1])
'''


def test_avx512_and_avx2_kernels_agree(tmp_path):
    """The AVX-512 kernels (chosen at run time; 16 channels, N = 1: 16-step row blocks) and the
    AVX2 ones (``MMVSSM_NO_AVX512=1``; 8 channels, N = 1: 8-step blocks) compute the same forward
    and backward (each also passes the parity suite against fp64 on whichever this CPU runs)."""
    results = {isa: run_isa_script(_ISA_SCRIPT, isa, tmp_path / f'{isa}.pt') for isa in ('auto', 'avx2')}
    assert results['avx2']['avx512'] is False
    if not results['auto']['avx512']:
        pytest.skip('this CPU has no AVX-512: only the AVX2 kernels run here')
    for n in (16, 1):
        a, b = results['auto'][n], results['avx2'][n]
        torch.testing.assert_close(a['out'], b['out'], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a['last'], b['last'], rtol=1e-5, atol=1e-5)
        for ga, gb in zip(a['grads'], b['grads']):
            torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-4)


def test_no_avx512_switch_values():
    """``MMVSSM_NO_AVX512`` set to "" or "0" leaves the run-time choice alone; any other value turns
    the AVX-512 kernels off."""
    import os
    import subprocess
    import sys
    code = 'from mmvssm import _C; print(_C.uses_avx512())'
    env = {k: v for k, v in os.environ.items() if k != 'MMVSSM_NO_AVX512'}
    got = {}
    for value in (None, '', '0', '1', 'yes'):
        e = dict(env) if value is None else dict(env, MMVSSM_NO_AVX512=value)
        res = subprocess.run([sys.executable, '-c', code], env=e, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
        got[value] = res.stdout.strip()
    assert got[''] == got['0'] == got[None]
    assert got['1'] == got['yes'] == 'False'
