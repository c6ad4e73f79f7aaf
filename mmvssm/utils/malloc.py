"""glibc malloc tuning for CPU runs: keep freed memory in the process.

PyTorch's CPU allocator is plain ``malloc``. With glibc's defaults every block above the mmap
threshold (at most 32 MiB) is a fresh ``mmap`` that is unmapped again on free, and the top of the
heap is trimmed back to the OS: each forward pass at high resolution then page-faults all of its
large activations in again. On a VM that backs guest memory lazily a 4 KiB fault costs several
microseconds, so a 25 MB activation costs ~50 ms of faults, more than the op that fills it.
:func:`retain_freed_memory` makes large blocks come from the heap and keeps freed heap memory
mapped, so later steps reuse resident pages (the process's RSS stays at its high-water mark, which
is what ``ru_maxrss`` reports anyway). The kernel may still reclaim some freed pages (seen on the
development VM for part of the allocations), so the saving is large but not always complete.
"""
import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def retain_freed_memory() -> str:
    """Tune glibc malloc (see module docstring); returns what was done, for the logs.

    A no-op (with the reason returned) off Linux/glibc.
    """
    if not sys.platform.startswith('linux'):
        return f'default allocator ({sys.platform}: not glibc)'
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError) as e:
        return f'default allocator (no glibc mallopt: {e})'
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1) == 1
    return 'glibc malloc: no mmap, no trim (freed memory reused)' if ok else \
        'default allocator (mallopt refused)'
