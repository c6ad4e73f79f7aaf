"""Dispatcher, backend selection, the CUDA call site (with a fake ``selective_scan_cuda``), bad inputs."""
import os
import subprocess
import sys
import types

import pytest
import torch

import mmvssm.ops as ops
from mmvssm.ops import selective_scan
from mmvssm.ops import scan_cpu, scan_cuda

from ops_scan_cases import FP32_TOL, GRAD_NAMES, assert_close, backend_params, ground_truth, make_inputs

ss_mod = sys.modules['mmvssm.ops.selective_scan']
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _small(**kw):
    inp = make_inputs(2, 8, 10, 4, **kw)
    return {k: inp[k] for k in GRAD_NAMES}, inp['delta_softplus']


# ---------------------------------------------------------------- public API


def test_public_api():
    assert ops.SCAN_FUNCTION_NAMES == ('SelectiveScanCuda', 'SelectiveScanCpu', 'SelectiveScanTorch',
                                       'SelectiveScanRef')
    for name in ops.SCAN_FUNCTION_NAMES:
        fn = getattr(ops, name)
        assert issubclass(fn, torch.autograd.Function) and fn.__name__ == name
    avail = ops.available_backends()
    assert set(avail) == {'cuda', 'cpu', 'torch', 'ref'}
    for ok, reason in avail.values():
        assert isinstance(ok, bool) and isinstance(reason, str) and reason


def test_cpu_backend_is_available_here():
    """The C++ extension must be built on x86-64 dev machines (pip install -e . / build_ext --inplace)."""
    ok, reason = ops.available_backends()['cpu']
    if os.environ.get('MMVSSM_NO_EXT') == '1':
        pytest.skip('MMVSSM_NO_EXT=1: extension deliberately not built')
    assert ok, reason


@pytest.mark.parametrize('backend,fn_name', [('cpu', 'SelectiveScanCpu'), ('torch', 'SelectiveScanTorch'),
                                             ('ref', 'SelectiveScanRef')])
def test_explicit_backend_runs_that_function(backend, fn_name):
    if not ops.available_backends()[backend][0]:
        pytest.skip(ops.available_backends()[backend][1])
    args, sp = _small()
    args['u'].requires_grad_(True)
    out = selective_scan(**args, delta_softplus=sp, backend=backend)
    assert out.grad_fn.name().startswith(fn_name)


def test_selection_order(monkeypatch):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    auto = 'cpu' if ops.available_backends()['cpu'][0] else 'torch'
    assert ops.resolve_backend(None, 'cpu') == auto
    monkeypatch.setenv(ops.ENV_VAR, 'torch')
    assert ops.resolve_backend(None, 'cpu') == 'torch'
    assert ops.resolve_backend('ref', 'cpu') == 'ref'  # explicit argument beats the env var
    args, sp = _small()
    args['u'].requires_grad_(True)
    assert selective_scan(**args, delta_softplus=sp).grad_fn.name().startswith('SelectiveScanTorch')
    monkeypatch.setenv(ops.ENV_VAR, 'auto')
    assert ops.resolve_backend(None, 'cpu') == auto
    monkeypatch.setenv(ops.ENV_VAR, 'nope')
    with pytest.raises(ValueError, match='MMVSSM_SCAN_BACKEND'):
        ops.resolve_backend(None, 'cpu')
    with pytest.raises(ValueError, match='unknown backend'):
        ops.resolve_backend('fast', 'cpu')


def test_unavailable_backends_explain_why(monkeypatch):
    with pytest.raises(ops.BackendUnavailableError, match='needs CUDA tensors'):
        selective_scan(*_small()[0].values(), backend='cuda')
    monkeypatch.setattr(scan_cpu, '_C', None)
    monkeypatch.setattr(scan_cpu, '_C_ERROR', 'ImportError: no module named mmvssm._C')
    with pytest.raises(ops.BackendUnavailableError, match=r'pip install -e \.'):
        selective_scan(*_small()[0].values(), backend='cpu')
    ok, reason = ops.available_backends()['cpu']
    assert not ok and 'pip install -e .' in reason
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    assert ops.resolve_backend(None, 'cpu') == 'torch'  # automatic fallback


def test_cuda_module_never_imported_for_cpu_tensors():
    code = (
        'import sys, torch\n'
        'import mmvssm.ops as ops\n'
        'u = torch.randn(1, 8, 16, requires_grad=True)\n'
        'y = ops.selective_scan(u, torch.rand(1, 8, 16), -torch.ones(8, 4), torch.randn(1, 4, 16),\n'
        '                       torch.randn(1, 4, 16), delta_softplus=True)\n'
        'y.sum().backward()\n'
        'ops.available_backends(); ops.resolve_backend(None, "cpu")\n'
        'bad = [m for m in sys.modules if "selective_scan_cuda" in m or m.startswith("mamba_ssm")]\n'
        'assert not bad, bad\n'
        'print("OK")\n')
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    env.pop(ops.ENV_VAR, None)
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and 'OK' in res.stdout, res.stderr[-2000:]


# ---------------------------------------------------------------- CUDA call site with a fake extension


class _FakeCuda(types.ModuleType):
    """Stands in for ``selective_scan_cuda``: records the calls, computes with the reference math."""

    def __init__(self):
        super().__init__('selective_scan_cuda')
        self.fwd_calls, self.fwd_results, self.bwd_calls = [], [], []

    def fwd(self, *args):
        self.fwd_calls.append(args)
        u, delta, A, B, C, D, z, delta_bias, softplus = args
        ref_out, last, _ = ground_truth(dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=None, delta_bias=delta_bias,
                                             delta_softplus=softplus))
        batch, dim, L = u.shape
        n_chunks = (L + 2047) // 2048
        x = torch.zeros(batch, dim, n_chunks, 2 * A.shape[1], dtype=torch.float32)
        x[:, :, -1, 1::2] = last.float()
        out = ref_out.to(u.dtype)
        self.fwd_results.append((x, out))
        if z is None:
            return [out, x]
        return [out, x, (ref_out * torch.nn.functional.silu(z.double())).to(u.dtype)]

    def bwd(self, *args):
        self.bwd_calls.append(args)
        u, delta, A, B, C, D, z, delta_bias, dout, x, out, _none, softplus, recompute = args
        res = [torch.full_like(u, 1.0), torch.full_like(delta, 2.0), torch.full_like(A, 3.0),
               torch.full_like(B, 4.0), torch.full_like(C, 5.0),
               None if D is None else torch.full_like(D, 6.0),
               None if delta_bias is None else torch.full_like(delta_bias, 7.0)]
        if z is not None:
            res.append(torch.full_like(z, 8.0))
        return res


@pytest.fixture
def fake_cuda(monkeypatch):
    fake = _FakeCuda()
    monkeypatch.setitem(sys.modules, 'selective_scan_cuda', fake)
    monkeypatch.setattr(ss_mod, '_device_is_cuda', lambda device: True)  # fake device check
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    return fake


@pytest.mark.parametrize('grouped', [False, True])
@pytest.mark.parametrize('with_z', [False, True])
def test_cuda_call_site(fake_cuda, grouped, with_z):
    inp = make_inputs(2, 8, 10, 4, 2 if grouped else None, with_z=with_z, dtype=torch.bfloat16, seed=11)
    inp['A'] = inp['A'].double()  # any float dtype in; the kernel must get fp32
    inp['D'] = inp['D'].half()
    args = {k: (None if inp[k] is None else inp[k].clone().requires_grad_(True)) for k in GRAD_NAMES}
    assert ops.resolve_backend(None, 'cpu') == 'cuda'  # auto picks cuda once the device check says GPU
    out, last = selective_scan(**args, delta_softplus=True, return_last_state=True)
    assert out.grad_fn.name().startswith('SelectiveScanCuda')
    (fargs,) = fake_cuda.fwd_calls
    assert len(fargs) == 9
    u, delta, A, B, C, D, z, bias, sp = fargs
    assert u.dtype == delta.dtype == torch.bfloat16 and B.dtype == C.dtype == torch.bfloat16
    assert A.dtype == D.dtype == bias.dtype == torch.float32
    assert B.dim() == 4 and B.shape == (2, 2 if grouped else 1, 4, 10) and C.shape == B.shape
    assert (z is None) != with_z and sp is True
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32 and last.shape == (2, 8, 4)
    ref_out, ref_last, _ = ground_truth(inp)
    assert_close(last, ref_last, 'last_state', **FP32_TOL)
    assert_close(out, ref_out, 'out', rtol=3e-2, atol=5e-2)
    last.mul_(0)  # the caller's own tensor, not a view of the x saved for the backward

    out.float().sum().backward()
    (bargs,) = fake_cuda.bwd_calls
    assert len(bargs) == 14
    assert bargs[9] is not None and bargs[9].shape == (2, 8, 1, 8)  # x from fwd
    assert_close(bargs[9][:, :, -1, 1::2], ref_last, 'saved x', **FP32_TOL)
    assert (bargs[10] is not None) == with_z  # pre-gate out only with z
    assert bargs[11] is None and bargs[12] is True and bargs[13] is False
    assert bargs[8].dtype == torch.bfloat16 and bargs[8].stride(-1) == 1
    for k, val in zip(('u', 'delta', 'A', 'B', 'C', 'D', 'delta_bias'), (1, 2, 3, 4, 5, 6, 7)):
        g = args[k].grad
        assert g.shape == args[k].shape and g.dtype == args[k].dtype, k
        assert torch.all(g == val), k
    if with_z:
        assert torch.all(args['z'].grad == 8)


def test_cuda_backend_without_module_explains(monkeypatch):
    monkeypatch.setitem(sys.modules, 'selective_scan_cuda', None)  # import -> ImportError
    monkeypatch.setattr(ss_mod, '_device_is_cuda', lambda device: True)
    with pytest.raises(ops.BackendUnavailableError, match=r'mmvssm\[cuda\]'):
        selective_scan(*_small()[0].values(), backend='cuda')
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    assert ops.resolve_backend(None, 'cpu') != 'cuda'
    assert scan_cuda.cuda_module_status()[0] is False


def test_cuda_import_failure_is_kept_and_auto_warns(monkeypatch):
    """On CUDA tensors without a working selective_scan_cuda, automatic selection warns that it falls back to
    the slow torch backend, and the failed import is not retried on every call; a module that appears later
    in sys.modules is used."""
    monkeypatch.setattr(scan_cuda, '_load_error', None)
    monkeypatch.setitem(sys.modules, 'selective_scan_cuda', None)  # import -> ImportError
    monkeypatch.setattr(ss_mod, '_device_is_cuda', lambda device: True)
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    fallback = 'cpu' if ops.available_backends()['cpu'][0] else 'torch'  # a real CUDA device: 'torch'
    with pytest.warns(RuntimeWarning, match='"cuda" backend is unavailable.*much slower'):
        assert ops.resolve_backend(None, 'cpu') == fallback

    def no_retry(name):
        raise AssertionError(f'import of {name} retried')
    monkeypatch.setattr(scan_cuda.importlib, 'import_module', no_retry)
    with pytest.warns(RuntimeWarning):
        assert ops.resolve_backend(None, 'cpu') == fallback
    with pytest.raises(ops.BackendUnavailableError, match=r'mmvssm\[cuda\]'):
        ops.resolve_backend('cuda', 'cpu')
    monkeypatch.setitem(sys.modules, 'selective_scan_cuda', _FakeCuda())
    assert ops.resolve_backend(None, 'cpu') == 'cuda'


# ---------------------------------------------------------------- tracing


@pytest.mark.parametrize('backend', backend_params())
def test_jit_trace_checked_and_traced_under_no_grad(backend):
    """torch.jit.trace with its default check (which reruns the function) passes, and a module traced under
    no_grad (as for deployment) still backpropagates. The dispatcher's grad-mode flag is a constant of the
    traced graph: it used to differ between the trace and the check, and a no_grad trace saved nothing for
    the backward."""
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.A_log = torch.nn.Parameter(torch.rand(8, 4))

        def forward(self, u, B, C):
            return selective_scan(u, u.sigmoid(), -self.A_log.exp(), B, C, delta_softplus=True, backend=backend)

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(1, 8, 16, generator=g), torch.randn(1, 4, 16, generator=g), torch.randn(1, 4, 16, generator=g))
    m = M()
    torch.jit.trace(m, x)  # check_trace=True
    with torch.no_grad():
        traced = torch.jit.trace(m, x)
    traced(*x).sum().backward()
    got = m.A_log.grad.clone()
    m.A_log.grad = None
    m(*x).sum().backward()
    torch.testing.assert_close(got, m.A_log.grad)


# ---------------------------------------------------------------- autocast / dtypes


@pytest.mark.parametrize('backend', backend_params(('cpu', 'torch')))
def test_autocast_computes_fp32(backend):
    args, sp = _small(seed=4)
    ref = selective_scan(**args, delta_softplus=sp, backend=backend)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = selective_scan(**args, delta_softplus=sp, backend=backend)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref)


# ---------------------------------------------------------------- bad inputs


def _bad(**over):
    args, _ = _small(groups=2)
    args.update(over)
    return args


BAD = [
    ('u', dict(u=torch.randn(8, 10)), 'u must be'),
    ('delta', dict(delta=torch.randn(2, 8, 11)), 'delta must'),
    ('A rank', dict(A=torch.randn(8)), 'A must be'),
    ('A dim', dict(A=-torch.ones(6, 4)), 'A must be'),
    ('N>256', dict(A=-torch.ones(8, 257), B=torch.randn(2, 2, 257, 10), C=torch.randn(2, 2, 257, 10)), '256'),
    ('B rank', dict(B=torch.randn(4, 10)), 'B must be'),
    ('B L', dict(B=torch.randn(2, 2, 4, 9)), 'B must be'),
    ('C N', dict(C=torch.randn(2, 5, 10)), 'C must be'),
    ('groups', dict(B=torch.randn(2, 3, 4, 10), C=torch.randn(2, 3, 4, 10)), 'not divisible'),
    ('D', dict(D=torch.randn(7)), 'D must be'),
    ('z', dict(z=torch.randn(2, 8, 9)), 'z must'),
    ('bias', dict(delta_bias=torch.randn(8, 1)), 'delta_bias must'),
    ('int', dict(u=torch.ones(2, 8, 10, dtype=torch.int64)), 'floating'),
    ('complex', dict(A=torch.ones(8, 4, dtype=torch.complex64)), 'complex'),
]


@pytest.mark.parametrize('backend', backend_params())
@pytest.mark.parametrize('name,over,msg', BAD, ids=[b[0] for b in BAD])
def test_bad_input_clear_error(backend, name, over, msg):
    with pytest.raises(ValueError, match=msg) as ei:
        selective_scan(**_bad(**over), backend=backend)
    assert 'selective_scan' in str(ei.value)


@pytest.mark.parametrize('backend', backend_params())
def test_non_contiguous_and_channels_last_inputs(backend):
    inp = make_inputs(2, 16, 33, 4, 2, seed=9)
    ref_out, _, _ = ground_truth(inp)
    strided = {}
    for k in GRAD_NAMES:
        t = inp[k]
        if t is None:
            strided[k] = None
        elif t.dim() == 3 and t.shape[1] == 16:  # (B, D, L) as a view of a channels-last (B, L, D) tensor
            strided[k] = t.transpose(1, 2).contiguous().transpose(1, 2)
        elif t.dim() == 4:  # (B, G, N, L) with a non-unit stride along L
            strided[k] = torch.repeat_interleave(t, 2, dim=-1)[..., ::2]
        elif t.dim() == 2:  # A: transposed storage
            strided[k] = t.t().contiguous().t()
        else:
            strided[k] = torch.stack([t, t], -1)[..., 0]
    assert not strided['u'].is_contiguous() and not strided['B'].is_contiguous()
    out = selective_scan(**strided, delta_softplus=True, backend=backend)
    assert_close(out, ref_out, 'out', **FP32_TOL)


def test_extension_rejects_bad_tensors_without_crashing():
    ext, err = scan_cpu.load_cpu_extension()
    if ext is None:
        pytest.skip(f'mmvssm._C unavailable: {err}')
    u = torch.randn(1, 8, 16)
    A, B = -torch.ones(8, 4), torch.randn(1, 1, 4, 16)
    with pytest.raises(RuntimeError, match='contiguous'):
        ext.scan_fwd(u.transpose(1, 2).contiguous().transpose(1, 2), u, A, B, B, None, None, None, True, False, False)
    with pytest.raises(RuntimeError, match='N'):
        ext.scan_fwd(u, u, -torch.ones(8, 300), torch.randn(1, 1, 300, 16), torch.randn(1, 1, 300, 16), None,
                     None, None, True, False, False)
    with pytest.raises(RuntimeError, match='checkpoint'):
        ext.scan_bwd(u, u, A, B, B, None, None, None, u, torch.zeros(3), True)


@pytest.mark.parametrize('with_z', [False, True])
@pytest.mark.parametrize('save', [False, True])
def test_cuda_call_site_through_the_custom_op(fake_cuda, with_z, save):
    """Under torch.compile / torch.export the cuda backend runs inside ``mmvssm::selective_scan``: the fake
    (shape) kernel agrees with the real call (fp32 last state; saved: mamba-ssm's x, (batch, dim,
    ceil(L / 2048), 2N) fp32, flat, and with z the pre-gate output), and gradients reach the kernel's bwd,
    which gets the saved x / out (without them the forward runs again)."""
    from mmvssm.ops.scan_custom_op import selective_scan_op
    if selective_scan_op is None:
        pytest.skip('torch < 2.4: no torch.library.custom_op')
    inp = make_inputs(2, 8, 2100, 4, 2, with_z=with_z, dtype=torch.bfloat16, seed=11)  # 2 chunks of 2048
    args = [None if inp[k] is None else inp[k].clone().requires_grad_(True) for k in GRAD_NAMES]
    torch.library.opcheck(torch.ops.mmvssm.selective_scan.default, (*args, True, True, save, 'cuda'))
    fake_cuda.fwd_calls.clear()
    fake_cuda.bwd_calls.clear()
    out, last, saved, saved_out = selective_scan_op(*args, True, True, save, 'cuda')
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32 and last.shape == (2, 8, 4)
    assert saved.dtype == torch.float32 and saved.shape == ((2 * 8 * 2 * 8,) if save else (0,))
    assert saved_out.dtype == torch.bfloat16 and saved_out.shape == ((2, 8, 2100) if save and with_z else (0,))
    assert len(fake_cuda.fwd_calls) == 1 and fake_cuda.fwd_calls[0][2].dtype == torch.float32  # A in fp32
    out.float().sum().backward()
    assert len(fake_cuda.fwd_calls) == (1 if save else 2) and len(fake_cuda.bwd_calls) == 1
    (fwd_x, fwd_out) = fake_cuda.fwd_results[-1]
    bargs = fake_cuda.bwd_calls[0]
    assert torch.equal(bargs[9], fwd_x) and bargs[9].shape == (2, 8, 2, 8)
    assert (bargs[10] is not None) == with_z and (not with_z or torch.equal(bargs[10], fwd_out))
    if save:
        torch.library.opcheck(torch.ops.mmvssm.selective_scan_backward.default,
                              (torch.randn_like(out), *[None if t is None else t.detach() for t in args],
                               saved, saved_out, True, 'cuda'))
    values = (1, 2, 3, 4, 5, 6, 8, 7) if with_z else (1, 2, 3, 4, 5, 6, 7)  # the fake bwd's constants (z: 8)
    for arg, val in zip([a for a in args if a is not None], values):
        assert arg.grad.dtype == arg.dtype and torch.all(arg.grad == val)
