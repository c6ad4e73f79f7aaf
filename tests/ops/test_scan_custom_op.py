"""The scan as ``torch.library`` custom ops: ``torch.compile`` and ``torch.export`` trace it.

``torch.library.opcheck`` checks the schema, the fake (shape) kernel against the real one, the
autograd registration and AOT dispatch; the rest checks that compiled and exported code computes
what eager code does, values and gradients.
"""
import pytest
import torch

from mmvssm.ops import selective_scan
from mmvssm.ops import scan_cpu, scan_torch
from mmvssm.ops.scan_custom_op import SCAN_FUNCTIONS, selective_scan_op

from ops_scan_cases import FP32_TOL, GRAD_NAMES, assert_close, assert_grad_close, ground_truth, make_inputs

pytestmark = pytest.mark.skipif(selective_scan_op is None, reason='torch < 2.4: no torch.library.custom_op')

CASES = {
    'shared+z': dict(groups=None),
    'grouped': dict(groups=2, with_z=False),
    'bare': dict(groups=None, with_D=False, with_z=False, with_bias=False, softplus=False),
}


def _args(case, dtype=torch.float32, requires_grad=True):
    inp = make_inputs(2, 8, 37, 4, dtype=dtype, seed=3, **CASES[case])
    args = {k: None if inp[k] is None else inp[k].clone().requires_grad_(requires_grad) for k in GRAD_NAMES}
    return inp, args


@pytest.mark.parametrize('backend', ['cpu', 'torch', 'ref'])
@pytest.mark.parametrize('case', list(CASES))
@pytest.mark.parametrize('last', [False, True])
@pytest.mark.parametrize('save', [False, True])
def test_opcheck(backend, case, last, save):
    inp, args = _args(case)
    torch.library.opcheck(torch.ops.mmvssm.selective_scan.default,
                          (*args.values(), inp['delta_softplus'], last, save, backend))


@pytest.mark.parametrize('backend', ['cpu', 'torch', 'ref'])
@pytest.mark.parametrize('N, L, groups', [(4, 600, None), (16, 300, 2), (1, 2100, 4)])
def test_opcheck_several_chunks(backend, N, L, groups):
    """Both ops on sequences of several chunks (the torch backend's: 16 or 32 steps here), the last state
    asked and the backend's state saved. (The torch backend's last state was a strided view of all its
    states there, where the fake kernel promises a contiguous tensor: inductor's stride check failed.)"""
    inp = make_inputs(2, 8, L, N, seed=3, groups=groups)
    args = [None if inp[k] is None else inp[k].clone().requires_grad_(True) for k in GRAD_NAMES]
    sp = inp['delta_softplus']
    torch.library.opcheck(torch.ops.mmvssm.selective_scan.default, (*args, sp, True, True, backend))
    plain = [None if t is None else t.detach() for t in args]
    _, _, saved, saved_out = selective_scan_op(*plain, sp, False, True, backend)
    assert saved.numel() > 0 if backend != 'ref' else saved.numel() == 0
    torch.library.opcheck(torch.ops.mmvssm.selective_scan_backward.default,
                          (torch.randn_like(plain[0]), *plain, saved, saved_out, sp, backend))


@pytest.mark.parametrize('backend', ['cpu', 'torch', 'ref'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
def test_opcheck_strided_inputs(backend, dtype):
    """Every input in a transposed memory layout (A column-major, (batch, L, dim) storage...), B shared and
    C grouped: both ops' outputs are dense, as their fake kernels promise (``ref``'s last state followed
    A's strides before)."""
    inp = make_inputs(2, 8, 130, 2, dtype=dtype, seed=5, groups=2)
    inp['B'] = inp['B'][:, 0]
    args = [None if inp[k] is None else
            (inp[k].transpose(-1, -2).contiguous().transpose(-1, -2) if inp[k].dim() > 1 else inp[k])
            .requires_grad_(True) for k in GRAD_NAMES]
    assert not args[0].is_contiguous() and not args[2].is_contiguous()
    sp = inp['delta_softplus']
    torch.library.opcheck(torch.ops.mmvssm.selective_scan.default, (*args, sp, True, True, backend))
    plain = [None if t is None else t.detach() for t in args]
    _, _, saved, saved_out = selective_scan_op(*plain, sp, False, True, backend)
    torch.library.opcheck(torch.ops.mmvssm.selective_scan_backward.default,
                          (torch.randn_like(plain[0]), *plain, saved, saved_out, sp, backend))


def _saved_shapes(backend, save):
    """What the op saves for ``_args('shared+z')`` (batch 2, dim 8, L = 37, N = 4): cpu one checkpoint chunk
    (2, 1, 4, 8); torch (chunk length 37) one entry state per channel and state (2, 1, 8, 1, 4), and the
    pre-gate output."""
    if not save or backend == 'ref':
        return (0,), (0,)
    return ((2 * 4 * 8,), (0,)) if backend == 'cpu' else ((2 * 8 * 4,), (2, 8, 37))


@pytest.mark.parametrize('backend, save', [('cpu', False), ('cpu', True), ('torch', False), ('torch', True)])
def test_opcheck_backward_op(backend, save):
    """The backward op from the cpu kernel's checkpoints / the torch backend's entry states and pre-gate
    output, or recomputing the forward (empty ``saved``)."""
    inp, args = _args('shared+z', requires_grad=False)
    sp = inp['delta_softplus']
    _, _, saved, saved_out = selective_scan_op(*args.values(), sp, False, save, backend)
    assert (saved.shape, saved_out.shape) == _saved_shapes(backend, save)
    dout = torch.randn_like(args['u'])
    torch.library.opcheck(torch.ops.mmvssm.selective_scan_backward.default,
                          (dout, *args.values(), saved, saved_out, sp, backend))


@pytest.mark.parametrize('backend', ['cpu', 'torch', 'ref'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_op_computes_what_the_function_does(backend, dtype):
    """Values, last state and every gradient through the op equal the backend's Function's, and both
    match the float64 ground truth."""
    inp, args = _args('shared+z', dtype=dtype)
    sp = inp['delta_softplus']
    extra = (True,) if backend in ('cpu', 'torch') else ()
    present = [t for t in args.values() if t is not None]
    out_f, last_f = SCAN_FUNCTIONS[backend].apply(*args.values(), sp, True, *extra)
    dout = torch.randn_like(out_f)
    grads_f = torch.autograd.grad(out_f, present, dout)
    out_o, last_o, saved, saved_out = selective_scan_op(*args.values(), sp, True, True, backend)
    assert out_o.requires_grad and not any(t.requires_grad for t in (last_o, saved, saved_out))
    grads_o = torch.autograd.grad(out_o, present, dout)
    assert out_o.dtype == dtype and last_o.dtype == torch.float32 and last_o.shape == (2, 8, 4)
    assert (saved.shape, saved_out.shape) == _saved_shapes(backend, True)
    torch.testing.assert_close(out_o, out_f, rtol=0, atol=0)
    torch.testing.assert_close(last_o, last_f, rtol=0, atol=0)
    for name, g_o, g_f, t in zip(GRAD_NAMES, grads_o, grads_f, present):
        assert g_o.dtype == t.dtype and g_o.shape == t.shape, name
        torch.testing.assert_close(g_o, g_f, rtol=1e-6, atol=1e-6, msg=name)
    if dtype == torch.float32:
        ref_out, ref_last, ref_grads = ground_truth(inp, dout)
        assert_close(out_o, ref_out, 'out', **FP32_TOL)
        assert_close(last_o, ref_last, 'last_state', **FP32_TOL)
        for name, g in zip(GRAD_NAMES, grads_o):
            assert_grad_close(g, ref_grads[name], name, **FP32_TOL)


class _CountingTorchScan:
    """Counts the torch backend's forward (``_forward``: N > 1) and backward passes."""

    def __init__(self, monkeypatch):
        self.calls = []
        for name, label in (('_forward', 'scan_fwd'), ('_backward', 'scan_bwd')):
            monkeypatch.setattr(scan_torch, name, self._counted(getattr(scan_torch, name), label))

    def _counted(self, fn, label):
        def counted(*a, **k):
            self.calls.append(label)
            return fn(*a, **k)
        return counted


class _CountingExtension:
    """``mmvssm._C`` counting its ``scan_fwd`` / ``scan_bwd`` calls."""

    def __init__(self, ext):
        self.ext, self.calls = ext, []

    def __getattr__(self, name):
        attr = getattr(self.ext, name)
        if name in ('scan_fwd', 'scan_bwd'):
            def counted(*a, **k):
                self.calls.append(name)
                return attr(*a, **k)
            return counted
        return attr


@pytest.mark.parametrize('backend', ['cpu', 'torch'])
@pytest.mark.parametrize('dynamic', [False, True])
def test_compiled_scan_matches_eager(backend, dynamic, monkeypatch):
    """``torch.compile(fullgraph=True)`` (no graph break: the op is opaque) gives eager's values and gradients,
    also with a symbolic sequence length (two lengths, one compilation). The cpu kernel's forward runs once
    per forward + backward, as in eager mode (its checkpoints are an output of the op); so does the torch
    backend's (its entry states are, of a data-dependent length for symbolic sizes)."""
    if backend == 'cpu':
        ext, _ = scan_cpu.load_cpu_extension()
        counting = _CountingExtension(ext)
        monkeypatch.setattr(scan_cpu, 'load_cpu_extension', lambda: (counting, None))
    else:
        counting = _CountingTorchScan(monkeypatch)

    def f(u, delta, A, B, C, D, z, delta_bias):
        out, last = selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True,
                                   return_last_state=True, backend=backend)
        return (out * 2).sum() + last.sum()

    from torch._dynamo.testing import CompileCounterWithBackend
    torch._dynamo.reset()
    counter = CompileCounterWithBackend('aot_eager')
    compiled_f = torch.compile(f, backend=counter, fullgraph=True, dynamic=dynamic)
    for length in ((37, 600) if dynamic else (37,)):
        inp = make_inputs(2, 8, length, 4, seed=3, **CASES['grouped'])
        args = [None if inp[k] is None else inp[k].clone().requires_grad_(True) for k in GRAD_NAMES]
        present = [t for t in args if t is not None]
        eager = f(*args)
        g_eager = torch.autograd.grad(eager, present)
        counting.calls.clear()
        compiled = compiled_f(*args)
        g_compiled = torch.autograd.grad(compiled, present)
        torch.testing.assert_close(compiled, eager)
        for g_c, g_e in zip(g_compiled, g_eager):
            torch.testing.assert_close(g_c, g_e, rtol=1e-6, atol=1e-6)
        assert counting.calls == ['scan_fwd', 'scan_bwd'], length
    assert counter.frame_count == 1


def test_jit_trace_keeps_the_function():
    """``torch.jit`` traces (FLOP counting) still see the named Function, not the custom op."""
    _, args = _args('grouped', requires_grad=False)
    graph = torch.jit.trace(lambda *a: selective_scan(*a, backend='cpu'),
                            tuple(args[k] for k in ('u', 'delta', 'A', 'B', 'C'))).graph
    kinds = {n.kind() for n in graph.nodes()}
    assert 'prim::PythonOp' in kinds and not any('mmvssm' in k for k in kinds)
