"""Large scan outputs (> 32 MiB) are advised to transparent huge pages (``MADV_HUGEPAGE``) before their first
write: the C++ kernel's forward and backward outputs (2 MiB-aligned blocks of their own) and the torch
backend's ``empty_large`` (a 2 MiB-aligned view into a slightly larger buffer). Checked on the mappings'
VmFlags, from the first to the last whole huge page of each tensor."""
import os

import pytest
import torch

from mmvssm.ops import available_backends
from mmvssm.ops._common import empty_large

_HUGE = 2 << 20
pytestmark = pytest.mark.skipif(
    not (os.path.exists('/proc/self/smaps') and os.path.exists('/sys/kernel/mm/transparent_hugepage/enabled')),
    reason='Linux with transparent huge pages only')


def _vm_flags(addr):
    """VmFlags of the mapping that holds ``addr`` (``/proc/self/smaps``)."""
    inside = False
    with open('/proc/self/smaps') as f:
        for line in f:
            head = line.split(maxsplit=1)[0]
            if '-' in head and not head.endswith(':'):
                lo, hi = (int(x, 16) for x in head.split('-'))
                inside = lo <= addr < hi
            elif inside and line.startswith('VmFlags:'):
                return line.split()[1:]
    raise AssertionError(f'no mapping holds {addr:#x}')


def _assert_advised(t, name):
    """The tensor spans > 32 MiB and its first and last whole 2 MiB pages are advised."""
    nbytes = t.numel() * t.element_size()
    assert nbytes > 16 * _HUGE, f'{name}: {nbytes} bytes is too small for this check'
    first = -(-t.data_ptr() // _HUGE) * _HUGE
    last = (t.data_ptr() + nbytes) // _HUGE * _HUGE - _HUGE
    for addr in (first, last):
        assert 'hg' in _vm_flags(addr), f'{name}: {addr:#x} is not advised to huge pages'


def test_empty_large_advised():
    like = torch.empty(1)
    t = empty_large((1, 16, 600_000), like)  # 38.4 MB
    assert t.shape == (1, 16, 600_000) and t.is_contiguous() and t.dtype == like.dtype
    _assert_advised(t, 'empty_large')
    t.fill_(1.5)
    assert t.sum().item() == 1.5 * t.numel()


@pytest.mark.skipif(not available_backends()['cpu'][0], reason='mmvssm._C is not built')
def test_cpu_kernel_outputs_advised():
    from mmvssm import _C
    g = torch.Generator().manual_seed(0)
    Bsz, D, L = 1, 16, 600_000  # u-sized outputs of 38.4 MB
    u, delta, z, dout = (torch.randn(Bsz, D, L, generator=g) for _ in range(4))
    A = -torch.rand(D, 1, generator=g) - 0.5
    Bm, Cm = (torch.randn(Bsz, 1, 1, L, generator=g) for _ in range(2))
    Dv, bias = torch.randn(D, generator=g), torch.randn(D, generator=g)
    out, _, ckpt = _C.scan_fwd(u, delta, A, Bm, Cm, Dv, z, bias, True, False, True)
    _assert_advised(out, 'out')
    assert out.data_ptr() % 64 == 0  # the N = 1 forward's non-temporal stores need 64-byte rows
    du, ddelta, _, _, _, _, dz, _ = _C.scan_bwd(u, delta, A, Bm, Cm, Dv, z, bias, dout, ckpt, True)
    for t, name in ((du, 'du'), (ddelta, 'ddelta'), (dz, 'dz')):
        assert t.shape == u.shape and t.is_contiguous()
        _assert_advised(t, name)
        assert torch.isfinite(t).all()
    assert torch.isfinite(out).all()
    # their storages behave like any tensor's: resize_ reallocates (from_blob storages could not)
    for t in (out, du):
        kept = t[0, 0, :8].clone()
        t.resize_(Bsz, D, L + 16)
        assert t.shape == (Bsz, D, L + 16) and torch.equal(t[0, 0, :8], kept)
