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
    # a few ulp of the result; the exact-threshold semantics (x > 20 -> x) hold up to rounding
    tol = 4 * torch.finfo(dtype).eps * expected.abs() + torch.finfo(dtype).tiny
    assert ((got.double() - expected).abs() <= tol).all()
    # into preallocated buffers, as the N = 1 forward calls it
    out, e, r = (torch.empty_like(x) for _ in range(3))
    assert scan_torch.softplus(x, out=out, e=e, r=r) is out
    torch.testing.assert_close(out, got, rtol=0, atol=0)
