"""map_math_constant_pages: run once per process, from the dispatcher for CPU tensors, never into a trace."""
import importlib

import pytest
import torch

from mmvssm.ops import math_pages, scan_torch, selective_scan

dispatcher_module = importlib.import_module('mmvssm.ops.selective_scan')  # the function shadows the module name


def _inputs(L=8):
    g = torch.Generator().manual_seed(0)
    u, delta = torch.randn(1, 4, L, generator=g), torch.randn(1, 4, L, generator=g)
    A = -torch.rand(4, 2, generator=g)
    B, C = torch.randn(1, 2, L, generator=g), torch.randn(1, 2, L, generator=g)
    return u, delta, A, B, C


def _count_math_calls(monkeypatch):
    calls = []
    for name in ('log1p', 'expm1'):
        real = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda x, _real=real, _name=name: calls.append((_name, x.dtype)) or _real(x))
    return calls


def test_runs_once_on_special_values(monkeypatch):
    monkeypatch.setattr(math_pages, '_mapped', False)
    calls = _count_math_calls(monkeypatch)
    math_pages.map_math_constant_pages()
    assert set(calls) == {(n, d) for n in ('log1p', 'expm1') for d in (torch.float32, torch.float64)}
    assert len(calls) == 4
    assert math_pages._mapped
    math_pages.map_math_constant_pages()
    assert len(calls) == 4
    # the values that select the special-case constants: -0.0 (log1p(-0.0) = -0.0), -1, below -1, inf, nan
    vals = torch.tensor(math_pages._SPECIAL_VALUES)
    assert (vals == 0).logical_and(torch.signbit(vals)).any()
    assert (vals == -1).any() and (vals < -1).any() and vals.isinf().any() and vals.isnan().any()


@pytest.mark.parametrize('backend', ['cpu', 'torch', 'ref'])
def test_dispatcher_maps_before_cpu_scans(monkeypatch, backend):
    if backend == 'cpu' and not dispatcher_module.available_backends()['cpu'][0]:
        pytest.skip('mmvssm._C not built')
    calls = []
    monkeypatch.setattr(dispatcher_module, 'map_math_constant_pages', lambda: calls.append(1))
    selective_scan(*_inputs(), delta_softplus=True, backend=backend)
    assert calls == [1]


def test_not_traced(monkeypatch):
    """Under torch.jit.trace the first call adds no log1p / expm1 nodes and leaves the mapping for later."""
    monkeypatch.setattr(math_pages, '_mapped', False)
    u, delta, A, B, C = _inputs()
    traced = torch.jit.trace(lambda u_, d_: selective_scan(u_, d_, A, B, C, backend='torch'), (u, delta),
                             check_trace=False)
    kinds = {n.kind() for n in traced.graph.nodes()}
    assert 'prim::PythonOp' in kinds
    assert not kinds & {'aten::log1p', 'aten::expm1'}
    assert not math_pages._mapped
    selective_scan(u, delta, A, B, C, backend='torch')
    assert math_pages._mapped


def test_not_compiled(monkeypatch):
    """Inside torch.compile the mapping is skipped (left for a later eager call), not traced into the graph."""
    monkeypatch.setattr(math_pages, '_mapped', False)

    def fn(x):
        math_pages.map_math_constant_pages()
        return x + 1

    assert torch.equal(torch.compile(fn, backend='eager', fullgraph=True)(torch.zeros(3)), torch.ones(3))
    assert not math_pages._mapped
    fn(torch.zeros(3))
    assert math_pages._mapped


def test_softplus_choice_timed_only_when_mapped(monkeypatch):
    """A first torch-backend call under torch.jit.trace times the softplus formulas without keeping the
    choice (the pages are not mapped then); the first eager call times and keeps it with them mapped."""
    monkeypatch.setattr(math_pages, '_mapped', False)
    monkeypatch.setattr(scan_torch, '_logaddexp_choice', {})
    monkeypatch.delenv(scan_torch.SOFTPLUS_ENV, raising=False)
    timed_mapped = []
    real = scan_torch._time_softplus_formulas
    monkeypatch.setattr(scan_torch, '_time_softplus_formulas',
                        lambda dtype: timed_mapped.append(math_pages._mapped) or real(dtype))
    u, delta, A, B, C = _inputs(L=3000)
    A = A[:, :1]
    B, C = B[:, :1], C[:, :1]
    torch.jit.trace(lambda u_, d_: selective_scan(u_, d_, A, B, C, delta_softplus=True, backend='torch'),
                    (u, delta), check_trace=False)
    assert timed_mapped == [False] and scan_torch._logaddexp_choice == {}
    selective_scan(u, delta, A, B, C, delta_softplus=True, backend='torch')
    assert timed_mapped == [False, True] and list(scan_torch._logaddexp_choice) == [torch.float32]
