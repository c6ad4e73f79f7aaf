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
    x = torch.ones(16 * 2 ** 20)  # 64 MiB, written once
    del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
faults_of_one_alloc()
print(min(faults_of_one_alloc() for _ in range(3)))
'''


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc mallopt: Linux only')
def test_retained_memory_is_not_faulted_in_again():
    faults = {}
    for mode in ('default', 'retain'):
        res = subprocess.run([sys.executable, '-c', _SCRIPT, mode], capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
        faults[mode] = int(res.stdout.split()[-1])
    # glibc's default: a 64 MiB block is a fresh mmap each time (16k 4 KiB pages, or 32 huge pages
    # with THP); retained: the same heap pages are reused
    assert faults['retain'] < 8, faults
    assert faults['default'] > faults['retain'], faults


def test_retain_reports_what_it_did():
    msg = retain_freed_memory()
    assert isinstance(msg, str) and msg
    if sys.platform.startswith('linux'):
        assert 'glibc' in msg or 'default allocator' in msg
