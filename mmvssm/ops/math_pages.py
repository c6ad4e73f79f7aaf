"""Map the pages of ATen's special-case math constants once per process (a slow path of AMD CPUs).

ATen's AVX-512 ``log1p`` (Sleef's, also inside ``torch.logaddexp``, ``F.softplus`` and
``F.logsigmoid``) and ``expm1`` end with masked loads of special-case results (for -0.0, -1, ...) from
libtorch_cpu.so's read-only data. While no lane selects them the loads are fully masked and never fault
the constants' page in, and AMD Zen 4 CPUs handle each such masked load of a page this process has not
touched with a slow assist. On the Zen 4 development VM ``torch.log1p`` over 384 x 512 fp32 took
822-865 us instead of 79-94 us (2 threads), and ``torch.logaddexp`` 935-975 instead of 154-192, on every
call, until one call selected the constant (``/proc/self/pagemap`` showed its page absent before and
present after). ``map_math_constant_pages`` runs those ops once on special values, so that their
constants are loaded and their pages mapped: about 0.1 ms, once.
"""
import torch

from ._common import traceable_only

_SPECIAL_VALUES = (-0.0, 0.0, -1.0, -2.0, 1.0, 100.0, -100.0, 89.0, -104.0, 1e-40, -1e-40, 1e30, -1e30,
                   float('inf'), float('-inf'), float('nan'))
_mapped = False


def map_math_constant_pages():
    """Run ``log1p`` and ``expm1`` on special values (fp32 and fp64, CPU) once per process.

    Skipped (and left for a later call) while ``torch.jit`` traces or ``torch.compile`` compiles, so that
    no extra nodes enter a traced graph. Returns whether the pages are mapped now.
    """
    global _mapped
    if _mapped or _capturing_graph():
        return _mapped
    with torch.no_grad():
        for dtype in (torch.float32, torch.float64):
            x = torch.tensor(_SPECIAL_VALUES * 4, dtype=dtype)  # 64 values: full vectors and no tail
            torch.log1p(x)
            torch.expm1(x)
    _mapped = True  # only now: a concurrent first call runs the ops too (0.1 ms) rather than skip them early
    return True


def _capturing_graph():
    """Whether ``torch.jit`` traces, ``torch.compile`` compiles or a dispatch mode is active."""
    return torch.jit.is_tracing() or traceable_only()
