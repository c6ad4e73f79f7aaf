"""Scan orders: directions match their docstrings, flatten/merge round trips, any H and W."""
import pytest
import torch

from mmvssm.ops import scan_orders as so

SIZES = [(3, 5), (5, 3), (1, 7), (7, 1), (4, 4), (2, 3)]


def _arange_map(H, W, C=2, B=2):
    base = torch.arange(H * W).reshape(1, 1, H, W)
    return base + 1000 * torch.arange(C).reshape(1, C, 1, 1) + 100000 * torch.arange(B).reshape(B, 1, 1, 1)


@pytest.mark.parametrize('H,W', SIZES)
def test_directions_on_arange_map(H, W):
    x = _arange_map(H, W, C=1, B=1)
    row = list(range(H * W))  # pixel (i, j) holds i * W + j
    col = [i * W + j for j in range(W) for i in range(H)]
    assert so.to_sequence(x, 'row')[0, 0].tolist() == row
    assert so.to_sequence(x, 'col')[0, 0].tolist() == col
    assert so.to_sequence(x, 'row_rev')[0, 0].tolist() == row[::-1]
    assert so.to_sequence(x, 'col_rev')[0, 0].tolist() == col[::-1]
    xs = so.cross_scan(x)
    assert xs.shape == (1, 4, 1, H * W)
    assert [xs[0, k, 0].tolist() for k in range(4)] == [row, col, row[::-1], col[::-1]]
    assert so.flatten_rows(x)[0, 0].tolist() == row
    vim = so.scan_flatten(x, so.VIM_ORDERS)
    assert [vim[0, k, 0].tolist() for k in range(2)] == [row, row[::-1]]
    arm = so.scan_flatten(x, so.ARM_ORDERS)
    assert [arm[0, k, 0].tolist() for k in range(4)] == [row, row[::-1], col, col[::-1]]


@pytest.mark.parametrize('H,W', SIZES)
def test_cross_scan_matches_vmamba_formulation(H, W):
    x = torch.randn(2, 3, H, W)
    B, C = x.shape[:2]
    xs = x.new_empty(B, 4, C, H * W)  # VMamba CrossScan
    xs[:, 0] = x.flatten(2, 3)
    xs[:, 1] = x.transpose(2, 3).flatten(2, 3)
    xs[:, 2:4] = torch.flip(xs[:, 0:2], dims=[-1])
    assert torch.equal(so.cross_scan(x), xs)
    ys = torch.randn(B, 4, C, H * W)  # VMamba CrossMerge
    y2 = ys[:, 0:2] + ys[:, 2:4].flip(dims=[-1]).view(B, 2, C, -1)
    y = y2[:, 0] + y2[:, 1].view(B, -1, W, H).transpose(2, 3).contiguous().view(B, C, -1)
    torch.testing.assert_close(so.cross_merge(ys, H, W), y)


@pytest.mark.parametrize('orders', [so.CROSS_SCAN_ORDERS, so.VIM_ORDERS, so.ARM_ORDERS, ('col',), ('row_rev',)])
@pytest.mark.parametrize('H,W', SIZES)
def test_round_trip(orders, H, W):
    x = _arange_map(H, W).double()
    ys = so.scan_flatten(x, orders)
    assert ys.shape == (2, len(orders), 2, H * W)
    assert torch.equal(so.scan_merge(ys, H, W, orders), len(orders) * so.flatten_rows(x))
    back = so.scan_unflatten(ys, H, W, orders)
    assert back.shape == (2, len(orders), 2, H, W)
    for k in range(len(orders)):
        assert torch.equal(back[:, k], x)
        assert torch.equal(so.from_sequence(so.to_sequence(x, orders[k]), H, W, orders[k]), x)
    assert torch.equal(so.unflatten_rows(so.flatten_rows(x), H, W), x)


def test_merge_is_adjoint_of_flatten():
    """<scan_flatten(x), ys> == <x, scan_merge(ys)>: merge is the transpose of flatten (gradients agree)."""
    H, W = 3, 5
    x = torch.randn(2, 3, H, W, dtype=torch.float64, requires_grad=True)
    ys = torch.randn(2, 4, 3, H * W, dtype=torch.float64)
    (so.cross_scan(x) * ys).sum().backward()
    torch.testing.assert_close(x.grad.flatten(2), so.cross_merge(ys, H, W))


def test_bad_shapes():
    with pytest.raises(ValueError, match='B, C, H, W'):
        so.cross_scan(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match='unknown order'):
        so.scan_flatten(torch.randn(1, 1, 2, 2), ('diag',))
    with pytest.raises(ValueError, match='expected'):
        so.cross_merge(torch.randn(1, 4, 2, 7), 2, 3)
    with pytest.raises(ValueError, match='expected'):
        so.unflatten_rows(torch.randn(1, 2, 7), 2, 3)
    # no orders, or a bare string (iterated letter by letter), are refused rather than giving None / stack errors
    for fn, arg in ((so.scan_flatten, torch.randn(1, 1, 2, 2)), (so.scan_merge, torch.randn(1, 0, 1, 4)),
                    (so.scan_unflatten, torch.randn(1, 0, 1, 4))):
        for orders in ((), 'row'):
            with pytest.raises(ValueError, match='non-empty sequence'):
                fn(arg, orders) if fn is so.scan_flatten else fn(arg, 2, 2, orders)
