"""mmvssm.utils.malloc: large blocks come from the heap and stay there after free.

Checked at glibc's level (``mallinfo2``): whether the pages of a freed heap block stay resident
is up to the kernel (on the development VM it reclaims some of them between allocations), so page
faults are not asserted here; docs/efficiency.md measures their effect on latency.
"""
import subprocess
import sys

import pytest

from mmvssm.utils.malloc import retain_freed_memory

_SCRIPT = r'''
import ctypes, sys
if sys.argv[1] == 'retain':
    from mmvssm.utils.malloc import retain_freed_memory
    print(retain_freed_memory(), file=sys.stderr)
import torch

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd',
                                              'usmblks', 'fsmblks', 'uordblks', 'fordblks',
                                              'keepcost')]

libc = ctypes.CDLL('libc.so.6')
libc.mallinfo2.restype = MallInfo2
x = torch.ones(32 * 2 ** 20)  # 128 MiB, above glibc's largest mmap threshold
live = libc.mallinfo2()
del x
freed = libc.mallinfo2()
print(live.hblkhd, live.arena, freed.hblkhd, freed.arena)
'''


def _glibc_has_mallinfo2():
    try:
        import ctypes
        return hasattr(ctypes.CDLL('libc.so.6'), 'mallinfo2')
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith('linux') or not _glibc_has_mallinfo2(),
                    reason='glibc >= 2.33 (mallinfo2) only')
def test_large_blocks_come_from_the_heap_and_stay():
    mib = 2 ** 20
    got = {}
    for mode in ('default', 'retain'):
        res = subprocess.run([sys.executable, '-c', _SCRIPT, mode], capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
        got[mode] = [int(v) for v in res.stdout.split()]
    live_mmap, _, freed_mmap, _ = got['default']
    # glibc's default: the block is its own mmap while alive, unmapped on free
    assert live_mmap >= 128 * mib and freed_mmap < 128 * mib, got
    live_mmap, live_heap, freed_mmap, freed_heap = got['retain']
    # retained: no mmap; the block is heap, and the heap is not trimmed after the free
    assert live_mmap < 128 * mib and live_heap >= 128 * mib, got
    assert freed_heap >= 128 * mib, got


def test_retain_reports_what_it_did():
    msg = retain_freed_memory()
    assert isinstance(msg, str) and msg
    if sys.platform.startswith('linux'):
        assert 'glibc' in msg or 'default allocator' in msg
