"""Scan orders: flatten a 2-D feature map into the 1-D sequences each backbone scans, and merge back.

Every function works for any H and W (not only squares). A map ``x`` has shape (B, C, H, W); a
sequence has shape (B, C, L) with ``L = H * W``. Order names (for a map with pixel (i, j) = row i, col j):

* ``'row'``      row-major: (0,0), (0,1), ..., (0,W-1), (1,0), ...      = ``x.flatten(2)``
* ``'col'``      column-major: (0,0), (1,0), ..., (H-1,0), (0,1), ...   = ``x.transpose(2, 3).flatten(2)``
* ``'row_rev'``  row-major reversed: (H-1,W-1), (H-1,W-2), ...          = ``x.flatten(2).flip(-1)``
* ``'col_rev'``  column-major reversed: (H-1,W-1), (H-2,W-1), ...       = ``x.transpose(2, 3).flatten(2).flip(-1)``

Presets:

* ``VIM_ORDERS = ('row', 'row_rev')``: Vim's forward / backward scans over the patch sequence.
* ``CROSS_SCAN_ORDERS = ('row', 'col', 'row_rev', 'col_rev')``: VMamba SS2D CrossScan, official order.
* ``ARM_ORDERS = ('row', 'row_rev', 'col', 'col_rev')``: rows and columns, both ways.

``scan_flatten(x, orders)`` -> (B, K, C, L); ``scan_merge(ys, H, W, orders)`` maps every direction back to
row-major order and sums -> (B, C, L) (VMamba's CrossMerge for ``CROSS_SCAN_ORDERS``);
``scan_unflatten(ys, H, W, orders)`` maps every direction back to a map without summing -> (B, K, C, H, W).
"""
import torch

ORDERS = ('row', 'col', 'row_rev', 'col_rev')
VIM_ORDERS = ('row', 'row_rev')
CROSS_SCAN_ORDERS = ('row', 'col', 'row_rev', 'col_rev')
ARM_ORDERS = ('row', 'row_rev', 'col', 'col_rev')


def _check_map(x):
    if x.dim() != 4:
        raise ValueError(f'scan orders: expected a (B, C, H, W) map, got shape {tuple(x.shape)}')


def _check_orders(orders):
    if isinstance(orders, str) or len(orders) == 0:
        raise ValueError(f'scan orders: expected a non-empty sequence of orders from {ORDERS}, got {orders!r}')
    for o in orders:
        if o not in ORDERS:
            raise ValueError(f'scan orders: unknown order {o!r}; choose from {ORDERS}')


def flatten_rows(x):
    """(B, C, H, W) -> (B, C, H*W) in row-major order."""
    _check_map(x)
    return x.flatten(2)


def unflatten_rows(seq, H, W):
    """(B, C, H*W) in row-major order -> (B, C, H, W)."""
    if seq.dim() != 3 or seq.shape[-1] != H * W:
        raise ValueError(f'scan orders: expected (B, C, {H}*{W}) sequence, got shape {tuple(seq.shape)}')
    return seq.reshape(seq.shape[0], seq.shape[1], H, W)


def to_sequence(x, order):
    """(B, C, H, W) -> (B, C, H*W) in one scan order (see module docstring)."""
    _check_map(x)
    _check_orders((order,))
    seq = x.flatten(2) if order.startswith('row') else x.transpose(2, 3).flatten(2)
    return seq.flip(-1) if order.endswith('_rev') else seq


def from_sequence(seq, H, W, order):
    """Inverse of ``to_sequence``: (B, C, H*W) in ``order`` -> (B, C, H, W)."""
    if seq.dim() != 3 or seq.shape[-1] != H * W:
        raise ValueError(f'scan orders: expected (B, C, {H}*{W}) sequence, got shape {tuple(seq.shape)}')
    _check_orders((order,))
    if order.endswith('_rev'):
        seq = seq.flip(-1)
    Bsz, C = seq.shape[:2]
    if order.startswith('row'):
        return seq.reshape(Bsz, C, H, W)
    return seq.reshape(Bsz, C, W, H).transpose(2, 3)


def scan_flatten(x, orders=CROSS_SCAN_ORDERS):
    """(B, C, H, W) -> (B, K, C, H*W): one sequence per order, K = len(orders).

    With the default ``CROSS_SCAN_ORDERS`` this is VMamba's CrossScan:
    [row-major, column-major, reversed row-major, reversed column-major].
    """
    _check_map(x)
    _check_orders(orders)
    row = col = None
    seqs = []
    for o in orders:
        if o.startswith('row'):
            row = x.flatten(2) if row is None else row
            s = row
        else:
            col = x.transpose(2, 3).flatten(2) if col is None else col
            s = col
        seqs.append(s.flip(-1) if o.endswith('_rev') else s)
    return torch.stack(seqs, dim=1)


def scan_unflatten(ys, H, W, orders=CROSS_SCAN_ORDERS):
    """(B, K, C, H*W) sequences in ``orders`` -> (B, K, C, H, W) maps (each direction back in place)."""
    _check_orders(orders)
    if ys.dim() != 4 or ys.shape[1] != len(orders) or ys.shape[-1] != H * W:
        raise ValueError(f'scan orders: expected (B, {len(orders)}, C, {H}*{W}), got shape {tuple(ys.shape)}')
    return torch.stack([from_sequence(ys[:, k], H, W, o) for k, o in enumerate(orders)], dim=1)


def scan_merge(ys, H, W, orders=CROSS_SCAN_ORDERS):
    """(B, K, C, H*W) sequences in ``orders`` -> (B, C, H*W) row-major sum of all directions.

    With the default ``CROSS_SCAN_ORDERS`` this is VMamba's CrossMerge.
    """
    _check_orders(orders)
    if ys.dim() != 4 or ys.shape[1] != len(orders) or ys.shape[-1] != H * W:
        raise ValueError(f'scan orders: expected (B, {len(orders)}, C, {H}*{W}), got shape {tuple(ys.shape)}')
    Bsz, _, C, L = ys.shape
    row = col = None
    for k, o in enumerate(orders):
        s = ys[:, k].flip(-1) if o.endswith('_rev') else ys[:, k]
        if o.startswith('row'):
            row = s if row is None else row + s
        else:
            col = s if col is None else col + s
    out = row
    if col is not None:
        col = col.reshape(Bsz, C, W, H).transpose(2, 3).reshape(Bsz, C, L)
        out = col if out is None else out + col
    return out


def cross_scan(x):
    """VMamba SS2D CrossScan: (B, C, H, W) -> (B, 4, C, H*W) [row, col, row reversed, col reversed]."""
    return scan_flatten(x, CROSS_SCAN_ORDERS)


def cross_merge(ys, H, W):
    """VMamba SS2D CrossMerge: (B, 4, C, H*W) -> (B, C, H*W) row-major sum."""
    return scan_merge(ys, H, W, CROSS_SCAN_ORDERS)
