"""mmvssm.utils.malloc: freed large blocks are reused instead of page-faulted in again."""
import subprocess
import sys

import pytest

from mmvssm.utils.malloc import retain_freed_memory

_SCRIPT = r'''
import resource, sys
if sys.argv[1] == 'retain':
    from mmvssm.utils.malloc import retain_freed_memory
    print(retain_freed_memory(), file=sys.stderr)
import torch
def faults_of_one_alloc():
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(32 * 2 ** 20)  # 128 MiB (above glibc's largest mmap threshold), written once
    del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
print(*[faults_of_one_alloc() for _ in range(6)])
'''


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc mallopt: Linux only')
def test_retained_memory_is_not_faulted_in_again():
    faults = {}
    for mode in ('default', 'retain'):
        res = subprocess.run([sys.executable, '-c', _SCRIPT, mode], capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
        faults[mode] = [int(v) for v in res.stdout.split()]
    # glibc's default: a 128 MiB block is a fresh mmap, unmapped on free: every allocation faults
    # all its pages in again (32k 4 KiB pages, or 64 huge pages with THP)
    assert min(faults['default']) >= 64, faults
    # retained: the block comes from the heap and stays mapped after free, so later allocations
    # reuse resident pages (the kernel may still reclaim some freed pages between allocations, as
    # seen on the development VM, so not every one is fault-free)
    assert min(faults['retain'][1:]) < max(1, min(faults['default']) // 100), faults
    assert sum(faults['retain'][1:]) < sum(faults['default'][1:]), faults


def test_retain_reports_what_it_did():
    msg = retain_freed_memory()
    assert isinstance(msg, str) and msg
    if sys.platform.startswith('linux'):
        assert 'glibc' in msg or 'default allocator' in msg
