"""The torch backend's softplus: both of its formulas match F.softplus (threshold 20) in fp32 and fp64."""
import pytest
import torch
import torch.nn.functional as F

from mmvssm.ops import scan_torch


def _inputs(dtype):
    x = torch.cat([torch.linspace(-120, 120, 4001, dtype=torch.float64),
                   torch.tensor([-1e30, -88.8, -20.0, -1e-8, 0.0, 1e-8, 19.999, 20.0, 20.001, 1e30],
                                dtype=torch.float64)])
    return x.to(dtype)


@pytest.mark.parametrize('fast', [True, False], ids=['logaddexp', 'exp-log'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_softplus_formulas(monkeypatch, fast, dtype):
    monkeypatch.setattr(scan_torch, '_logaddexp_is_fast', lambda x: fast)
    x = _inputs(dtype)
    expected = F.softplus(x.double())
    got = scan_torch.softplus(x)
    assert got.dtype == dtype
    # a few ulp of the result (exp-log: plus |x| ulp from exp2's rounded argument); the exact-threshold
    # semantics (x > 20 -> x) hold up to rounding
    ulps = 4 if fast else 4 + x.double().abs()
    tol = ulps * torch.finfo(dtype).eps * expected.abs() + torch.finfo(dtype).tiny
    assert ((got.double() - expected).abs() <= tol).all()
    # into preallocated buffers, as the N = 1 forward calls it
    out, e, r = (torch.empty_like(x) for _ in range(3))
    assert scan_torch.softplus(x, out=out, e=e, r=r) is out
    torch.testing.assert_close(out, got, rtol=0, atol=0)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_softplus_log2(dtype):
    """softplus_log2(xs) = log2(1 + 2^xs) = softplus(xs ln 2) log2 e (threshold 20 in x) to (4 + |xs|) ulp,
    past exp2's overflow too; -inf -> 0, inf -> inf, nan -> nan."""
    xs = _inputs(dtype) * 1.4426950408889634
    expected = F.softplus(xs.double() * 0.6931471805599453) * 1.4426950408889634
    got = scan_torch.softplus_log2(xs)
    assert got.dtype == dtype
    tol = (4 + xs.double().abs()) * torch.finfo(dtype).eps * expected.abs() + torch.finfo(dtype).tiny
    assert ((got.double() - expected).abs() <= tol).all()
    special = scan_torch.softplus_log2(torch.tensor([-float('inf'), float('inf'), float('nan')], dtype=dtype))
    assert special[0] == 0 and special[1] == float('inf') and special[2].isnan()


@pytest.mark.parametrize('value,expected', [('logaddexp', True), ('exp-log', False)])
def test_formula_forced_by_environment(monkeypatch, value, expected):
    monkeypatch.setenv(scan_torch.SOFTPLUS_ENV, value)
    monkeypatch.setattr(scan_torch, '_time_softplus_formulas', lambda dtype: pytest.fail('timed though forced'))
    assert scan_torch._logaddexp_is_fast(torch.zeros(3)) is expected


def test_unknown_formula_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(scan_torch.SOFTPLUS_ENV, 'log1p')
    with pytest.raises(ValueError, match="MMVSSM_TORCH_SOFTPLUS='log1p'.*logaddexp.*exp-log"):
        scan_torch.softplus(torch.zeros(3))


def test_formula_timed_once_per_dtype(monkeypatch):
    monkeypatch.delenv(scan_torch.SOFTPLUS_ENV, raising=False)
    monkeypatch.setattr(scan_torch, '_logaddexp_choice', {})
    calls = []
    real = scan_torch._time_softplus_formulas
    monkeypatch.setattr(scan_torch, '_time_softplus_formulas', lambda dtype: calls.append(dtype) or real(dtype))
    for dtype in (torch.float32, torch.float32, torch.float64):
        assert isinstance(scan_torch._logaddexp_is_fast(torch.zeros(3, dtype=dtype)), bool)
    assert calls == [torch.float32, torch.float64]
