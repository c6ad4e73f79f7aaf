"""NaN and extreme inputs: every backend keeps a NaN where the sequential scan has one, and stays finite
(and right) where the sequential scan is finite. The ``cpu`` backend runs in a subprocess per instruction
set (AVX-512 where the CPU has it, AVX2 with ``MMVSSM_NO_AVX512=1``), each on its three kernels: the
channel-vector one (N > 1), the N = 1 row kernel and the scalar tail (channels left over)."""
import pytest
import torch

from mmvssm.ops import available_backends, selective_scan

from ops_scan_cases import FP32_TOL, assert_close, backend_params, make_inputs, run_isa_script

KERNELS = (('vector', 16, 4), ('n1', 8, 1), ('tail', 3, 4))  # name, channels, N
# input -> whether a NaN there reaches the state (and so the last state) of its channel
NAN_INPUTS = (('A', True), ('delta', True), ('delta_bias', True), ('u', True), ('B', True), ('C', False),
              ('D', False), ('z', False))
# the output is linear in these, so their own gradient does not depend on them (a NaN shows in others')
LINEAR = ('u', 'B', 'C', 'D')


def _probe(backend):
    """For each kernel and each input with one NaN: (out NaN in the NaN's channel, out finite in the
    others, last state NaN as expected, a NaN in the input's own gradient, or for an input the output is
    linear in, in some other gradient), with and without softplus."""
    res = {}
    for kname, dim, n in KERNELS:
        for softplus in (True, False):
            for name, reaches_state in NAN_INPUTS:
                if name == 'delta_bias' and not softplus:
                    continue
                inp = make_inputs(1, dim, 40, n, with_z=True, softplus=softplus, seed=3)
                sp = inp.pop('delta_softplus')
                t = inp[name]
                if name in ('A', 'D', 'delta_bias'):
                    t[1] = float('nan')  # channel 1
                elif name in ('B', 'C'):
                    t[0, 0, 5] = float('nan')  # shared by every channel
                else:
                    t[0, 1, 5] = float('nan')
                for v in inp.values():
                    v.requires_grad_(True)
                out, last = selective_scan(**inp, delta_softplus=sp, return_last_state=True, backend=backend)
                grads = dict(zip(inp, torch.autograd.grad(out.sum(), list(inp.values()))))
                grad_nan = (any(g.isnan().any() for k, g in grads.items() if k != name) if name in LINEAR
                            else bool(grads[name].isnan().any()))
                nan_ch = out.isnan().any(-1)[0]  # (dim,)
                shared = name in ('B', 'C')
                others_ok = bool(nan_ch.all()) if shared else bool(nan_ch[1] and not nan_ch[[0, 2]].any())
                last_nan = last.isnan().any(-1)[0]
                if reaches_state:
                    last_ok = bool(last_nan.all()) if shared else bool(last_nan[1] and not last_nan[[0, 2]].any())
                else:
                    last_ok = not bool(last_nan.any())
                res[(kname, softplus, name)] = (others_ok, last_ok, bool(grad_nan))
    return res


def _extremes(backend):
    """Gate z and softplus input delta + bias at -100 (sigmoid ~ 4e-44, softplus ~ 4e-44): finite outputs and
    gradients that match float64 (as (out, grads) tensors)."""
    out = {}
    for kname, dim, n in KERNELS:
        inp = make_inputs(1, dim, 40, n, with_z=True, seed=5)
        sp = inp.pop('delta_softplus')
        inp['z'][0, 1, 7] = -100.0
        inp['delta'][0, 2 % dim, 9] = -100.0
        inp['delta'][0, 0, 30] = -300.0
        for v in inp.values():
            v.requires_grad_(True)
        y = selective_scan(**inp, delta_softplus=sp, backend=backend)
        grads = torch.autograd.grad(y.sum(), list(inp.values()))
        out[kname] = (y.detach(), [g.detach() for g in grads], {k: v.detach() for k, v in inp.items()}, sp)
    return out


_SCRIPT = r'''
import sys, torch
sys.path.insert(0, sys.argv[2])
from mmvssm import _C
import test_scan_special_values as t
torch.save(dict(avx512=_C.uses_avx512(), nan=t._probe('cpu'), ext=t._extremes('cpu')), sys.argv[1])
'''


def _check_nan(res, who):
    bad = {k: v for k, v in res.items() if not all(v)}
    assert not bad, f'{who}: (kernel, softplus, input) -> (out NaN only where due, last state, grad NaN): {bad}'


def _check_extremes(res, who):
    for kname, (y, grads, inp, sp) in res.items():
        assert torch.isfinite(y).all(), f'{who} {kname}: non-finite output'
        for g in grads:
            assert torch.isfinite(g).all(), f'{who} {kname}: non-finite gradient'
        leaves = {k: v.double().requires_grad_(True) for k, v in inp.items()}
        ref = selective_scan(**leaves, delta_softplus=sp, backend='torch')
        ref_grads = torch.autograd.grad(ref.sum(), list(leaves.values()))
        assert_close(y, ref, f'{who} {kname} out', **FP32_TOL)
        for name, g, rg in zip(leaves, grads, ref_grads):
            assert_close(g, rg, f'{who} {kname} d{name}', rtol=3e-3, atol=2e-3 * max(1.0, rg.abs().max().item()))


@pytest.mark.parametrize('backend', backend_params(('torch', 'ref')))
def test_nan_propagates_python_backends(backend):
    _check_nan(_probe(backend), backend)


@pytest.mark.parametrize('backend', backend_params(('torch', 'ref')))
def test_extreme_negative_gate_and_softplus_python_backends(backend):
    _check_extremes(_extremes(backend), backend)


@pytest.mark.skipif(not available_backends()['cpu'][0], reason='mmvssm._C is not built')
@pytest.mark.parametrize('isa', ['auto', 'avx2'])
def test_cpu_kernels_nan_and_extremes(isa, tmp_path):
    """A NaN in any input is NaN in the output (only in its channel unless it is in B / C), in the last state
    when it reaches the state, and in its gradient; a gate or softplus input of -100 / -300 stays finite. On
    the AVX-512 kernels this caught a clamp that turned NaN into 2^-126 (a NaN decay or step treated as none)
    and a sigmoid that gave NaN below -88.7 (1 / inf in rcp's Newton step)."""
    res = run_isa_script(_SCRIPT, isa, tmp_path / 'res.pt')
    if isa == 'avx2':
        assert res['avx512'] is False
    _check_nan(res['nan'], f'cpu ({isa}, avx512={res["avx512"]})')
    _check_extremes(res['ext'], f'cpu ({isa}, avx512={res["avx512"]})')
