"""Small helpers shared by the selective-scan backends."""
import contextlib
import ctypes
import ctypes.util
import sys

import torch


def compute_dtype(dtype):
    """fp64 inputs compute in fp64 (gradcheck); everything else in fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@contextlib.contextmanager
def no_autocast(device_type):
    """Disable autocast for ``device_type`` ('cpu' / 'cuda') inside the block; the scan runs in fp32."""
    if device_type in ('cpu', 'cuda'):
        with torch.autocast(device_type=device_type, enabled=False):
            yield
    else:
        yield


def is_compiling():
    """Whether ``torch.compile`` / ``torch.export`` is tracing (``torch.compiler.is_compiling`` is torch >= 2.3)."""
    fn = getattr(torch.compiler, 'is_compiling', None)
    if fn is None:
        from torch._dynamo import is_compiling as fn
    return fn()


def traceable_only():
    """Whether only ATen / custom ops may run: while ``torch.compile`` / ``torch.export`` traces, or under
    a ``TorchDispatchMode`` (``FlopCounterMode``, ``FakeTensorMode``, selective activation checkpointing...),
    which sees those ops but not what a C++ kernel does inside an ``autograd.Function``. Then no data
    pointer is read and no tensor is cached across calls (it could be a fake one)."""
    return is_compiling() or torch._C._len_torch_dispatch_stack() > 0  # dynamo cannot trace the second


def as_4d(t):
    """(B, N, L) -> (B, 1, N, L) view; (B, G, N, L) unchanged."""
    return t.unsqueeze(1) if t.dim() == 3 else t


def broadcast_groups(B, C, contiguous=True):
    """(batch, G, N, L) B and C with one group count: when one is shared (G = 1) and the other grouped,
    both are expanded to the larger G, and made contiguous as the fused kernels want (else views)."""
    if B.shape[1] == C.shape[1]:
        return B, C
    G = max(B.shape[1], C.shape[1])
    B, C = B.expand(-1, G, -1, -1), C.expand(-1, G, -1, -1)
    return (B.contiguous(), C.contiguous()) if contiguous else (B, C)


def input_metas(inputs):
    """``(dtype, shape)`` of each scan input, None for absent ones (what a kernel's gradients are cast back to)."""
    return [None if t is None else (t.dtype, t.shape) for t in inputs]


def grads_to_inputs(grads, metas, needs):
    """A kernel's 8 gradients cast / reduced back to their inputs (``metas``: :func:`input_metas`); None where
    ``needs[i]`` is False or input i was None."""
    result = []
    for i, (g, m) in enumerate(zip(grads, metas)):
        if m is None or not needs[i]:
            result.append(None)
            continue
        dtype, shape = m
        result.append((bc_grad(g, shape) if i in (3, 4) else g).to(dtype))
    return result


def bc_grad(g, shape):
    """A kernel's (B, G, N, L) gradient of B or C back to the input's ``shape``: (B, N, L) for a shared
    one, summed over the groups it was broadcast to when only the other one was grouped."""
    if len(shape) == 3:
        return g.sum(1)
    return g.sum(1, keepdim=True) if g.shape[1] != shape[1] else g


_HUGE = 2 << 20
_MADV_HUGEPAGE = 14
_madvise = None


def _get_madvise():
    global _madvise
    if _madvise is None:
        _madvise = False
        if sys.platform.startswith('linux'):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6', use_errno=True)
                fn = libc.madvise
                fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
                fn.restype = ctypes.c_int
                _madvise = fn
            except (OSError, AttributeError):
                pass
    return _madvise


def empty_large(shape, like):
    """``torch.empty(shape)`` like ``like`` (CPU); when large, backed by transparent huge pages if possible.

    A fresh large CPU allocation is mmap'ed memory whose 4 KiB pages fault in on first write; for a
    (1, 384, 64000) fp32 output that costs more than the whole scan. The tensor is carved 2 MiB aligned out
    of a slightly larger buffer and ``madvise(MADV_HUGEPAGE)`` is applied before the first touch
    (THP "madvise" mode): ~50 faults instead of ~24k. A no-op fallback elsewhere.
    """
    numel = 1
    for s_ in shape:
        numel *= s_
    esize = like.element_size()
    madvise = _get_madvise() if like.device.type == 'cpu' else False
    if not madvise or numel * esize <= 16 * _HUGE:  # smaller: recycled by malloc (mmap threshold <= 32 MiB)
        return like.new_empty(shape)
    extra = _HUGE // esize
    buf = like.new_empty(numel + extra)
    ptr = buf.data_ptr()
    off = (-ptr) % _HUGE
    if off % esize:
        return buf[:numel].view(shape)
    start = off // esize
    nbytes = (numel * esize) // _HUGE * _HUGE
    if nbytes:
        madvise(ptr + off, nbytes, _MADV_HUGEPAGE)
    return buf[start:start + numel].view(shape)
