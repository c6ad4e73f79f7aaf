"""The selective-scan op (mamba-ssm ``selective_scan_fn`` semantics) and its backend dispatcher.

Backends (each a named ``torch.autograd.Function``, traced as ``prim::PythonOp.<name>``):

========  ======================  ==========================================================
name      Function                what
========  ======================  ==========================================================
cuda      ``SelectiveScanCuda``   mamba-ssm's ``selective_scan_cuda`` (CUDA tensors only)
cpu       ``SelectiveScanCpu``    fused C++ kernel ``mmvssm._C``, AVX-512 / AVX2 (CPU)
torch     ``SelectiveScanTorch``  pure-PyTorch chunked two-level scan (any device)
ref       ``SelectiveScanRef``    plain sequential loop like ``selective_scan_ref`` (tests)
========  ======================  ==========================================================

Selection: explicit ``backend=`` > environment variable ``MMVSSM_SCAN_BACKEND`` > automatic
(CUDA tensors and ``selective_scan_cuda`` importable -> ``cuda``; else ``cpu`` when ``mmvssm._C`` is
importable and the tensors are on the CPU; else ``torch``). ``selective_scan_cuda`` is never imported for
CPU tensors.

Under ``torch.compile`` / ``torch.export`` the same Functions run inside the ``torch.library`` custom op
``mmvssm::selective_scan`` (:mod:`.scan_custom_op`), which those tracers can keep opaque.
"""
import os
import warnings

import torch

from ._common import no_autocast, traceable_only
from .math_pages import map_math_constant_pages
from .scan_cpu import load_cpu_extension
from .scan_cuda import cuda_module_status, load_cuda_module
from .scan_custom_op import SCAN_FUNCTIONS as _FUNCTIONS
from .scan_custom_op import selective_scan_op

BACKENDS = ('cuda', 'cpu', 'torch', 'ref')
ENV_VAR = 'MMVSSM_SCAN_BACKEND'
MAX_DSTATE = 256

#: Class names of the scan Functions, as they appear in traced graphs (``prim::PythonOp.<name>``).
SCAN_FUNCTION_NAMES = tuple(f.__name__ for f in _FUNCTIONS.values())


class BackendUnavailableError(RuntimeError):
    """A selective-scan backend was requested but cannot run here."""


def available_backends():
    """``{name: (available, reason)}`` for every backend; imports no CUDA library."""
    cuda_ok, cuda_reason = cuda_module_status()
    ext, err = load_cpu_extension()
    if ext is not None:
        if ext.has_avx2():
            simd = ('AVX-512 (16 channels per vector, run-time choice)' if ext.uses_avx512()
                    else 'AVX2+FMA')
        else:
            simd = 'scalar (built without AVX2)'
        cpu = (True, f'mmvssm._C fused kernel, {simd}')
    else:
        cpu = (False, f'mmvssm._C is not built ({err}); build it with `pip install -e .` '
                      '(needs a C++ compiler; MMVSSM_NO_EXT=1 skips it)')
    return {
        'cuda': (cuda_ok, cuda_reason),
        'cpu': cpu,
        'torch': (True, 'pure PyTorch chunked scan (always available)'),
        'ref': (True, 'sequential reference loop (slow; for tests)'),
    }


def _shape(t):
    return tuple(t.shape)


def _check(u, delta, A, B, C, D, z, delta_bias):
    """Validate ranks/shapes/dtypes/devices; raise ValueError naming the argument and the shapes."""
    named = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)
    for name, t in named.items():
        if t is None and name in ('u', 'delta', 'A', 'B', 'C'):
            raise ValueError(f'selective_scan: {name} is required')
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f'selective_scan: {name} must be a torch.Tensor, got {type(t).__name__}')
    if A.is_complex():
        raise ValueError(f'selective_scan: complex A {_shape(A)} is not supported (real A only)')
    for name, t in named.items():
        if t is not None and not t.is_floating_point():
            raise ValueError(f'selective_scan: {name} must be a floating-point tensor, got {t.dtype}')
    if u.dim() != 3:
        raise ValueError(f'selective_scan: u must be (batch, dim, seqlen), got shape {_shape(u)}')
    batch, dim, seqlen = u.shape
    if seqlen < 1 or dim < 1 or batch < 1:
        raise ValueError(f'selective_scan: u must have non-empty batch, dim and seqlen, got shape {_shape(u)}')
    if delta.shape != u.shape:
        raise ValueError(f'selective_scan: delta must have the shape of u {_shape(u)}, got {_shape(delta)}')
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f'selective_scan: A must be (dim, dstate) = ({dim}, N), got shape {_shape(A)}')
    dstate = A.shape[1]
    if not 1 <= dstate <= MAX_DSTATE:
        raise ValueError(f'selective_scan: dstate N = A.shape[1] must be in [1, {MAX_DSTATE}], got A {_shape(A)}')
    for name, t in (('B', B), ('C', C)):
        if t.dim() == 3:
            if tuple(t.shape) != (batch, dstate, seqlen):
                raise ValueError(f'selective_scan: {name} must be (batch, dstate, seqlen) = '
                                 f'{(batch, dstate, seqlen)} or (batch, groups, dstate, seqlen), got {_shape(t)}')
        elif t.dim() == 4:
            if t.shape[0] != batch or t.shape[2] != dstate or t.shape[3] != seqlen or t.shape[1] < 1:
                raise ValueError(f'selective_scan: {name} must be (batch, groups, dstate, seqlen) = '
                                 f'({batch}, G, {dstate}, {seqlen}), got {_shape(t)}')
            if dim % t.shape[1]:
                raise ValueError(f'selective_scan: dim {dim} of u {_shape(u)} is not divisible by the '
                                 f'{t.shape[1]} groups of {name} {_shape(t)}')
        else:
            raise ValueError(f'selective_scan: {name} must be (batch, dstate, seqlen) or '
                             f'(batch, groups, dstate, seqlen), got shape {_shape(t)}')
    if B.dim() == 4 and C.dim() == 4 and B.shape[1] != C.shape[1] and 1 not in (B.shape[1], C.shape[1]):
        raise ValueError(f'selective_scan: B {_shape(B)} and C {_shape(C)} have different group counts')
    for name, t in (('D', D), ('delta_bias', delta_bias)):
        if t is not None and tuple(t.shape) != (dim,):
            raise ValueError(f'selective_scan: {name} must be (dim,) = ({dim},), got shape {_shape(t)}')
    if z is not None and z.shape != u.shape:
        raise ValueError(f'selective_scan: z must have the shape of u {_shape(u)}, got {_shape(z)}')
    for name, t in named.items():
        if t is not None and t.device != u.device:
            raise ValueError(f'selective_scan: {name} is on {t.device} but u is on {u.device}')


def _device_is_cuda(device):
    """Whether tensors on ``device`` go to the CUDA kernel (a seam for tests with a fake CUDA module)."""
    return device.type == 'cuda'


def resolve_backend(backend=None, device=None):
    """Name of the backend that would run for tensors on ``device`` (explicit > env var > automatic)."""
    device = torch.device('cpu') if device is None else torch.device(device)
    name = backend if backend is not None else (os.environ.get(ENV_VAR) or 'auto')
    name = str(name).strip().lower()
    source = 'backend=' if backend is not None else f'{ENV_VAR}='
    if name == 'auto':
        fallback = 'cpu' if device.type == 'cpu' and load_cpu_extension()[0] is not None else 'torch'
        if not _device_is_cuda(device):
            return fallback
        mod, reason = load_cuda_module()
        if mod is not None:
            return 'cuda'
        warnings.warn(f'selective_scan: CUDA tensors, but the "cuda" backend is unavailable: {reason}. Using the '
                      f'much slower "{fallback}" backend ({ENV_VAR}={fallback} silences this).',
                      RuntimeWarning, stacklevel=4)
        return fallback
    if name not in BACKENDS:
        raise ValueError(f'selective_scan: unknown backend {source}{name!r}; choose one of {BACKENDS} or "auto"')
    if name == 'cuda':
        if not _device_is_cuda(device):
            raise BackendUnavailableError(
                f'selective_scan: backend "cuda" ({source}cuda) needs CUDA tensors, got tensors on {device}')
        mod, reason = load_cuda_module()
        if mod is None:
            raise BackendUnavailableError(f'selective_scan: backend "cuda" is unavailable: {reason}')
    elif name == 'cpu':
        if device.type != 'cpu':
            raise BackendUnavailableError(
                f'selective_scan: backend "cpu" ({source}cpu) needs CPU tensors, got tensors on {device}; '
                'use "cuda" or "torch"')
        ext, err = load_cpu_extension()
        if ext is None:
            raise BackendUnavailableError(
                f'selective_scan: backend "cpu" is unavailable: mmvssm._C is not built ({err}). Build it with '
                '`pip install -e .` (or `python setup.py build_ext --inplace`) with a C++ compiler, '
                'or use backend "torch"')
    return name


_ERRORS = {'ValueError': ValueError, 'BackendUnavailableError': BackendUnavailableError}


@torch.compiler.assume_constant_result
def _resolve_for_call(backend, device):
    """:func:`resolve_backend` for a scan call: ``(name, None)``, or ``(None, (error class name, message))``
    instead of raising.

    ``torch.compile`` runs it while tracing and keeps the answer as a constant of the graph (so a compiled
    function keeps the backend it was compiled with, whatever ``MMVSSM_SCAN_BACKEND`` says later): dynamo
    cannot trace the lazy import of the CUDA module (a graph break; an error with ``fullgraph=True``).
    The caller raises the error in traced code, where it reaches the user as itself.
    """
    try:
        return resolve_backend(backend, device), None
    except (ValueError, BackendUnavailableError) as e:
        return None, (type(e).__name__, str(e))


def get_scan_function(name):
    """The ``torch.autograd.Function`` class of a backend."""
    return _FUNCTIONS[name]


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend=None):
    """Selective scan with exactly the semantics of mamba-ssm's ``selective_scan_fn``.

    Args:
        u: (batch, dim, L) input.
        delta: (batch, dim, L) step sizes (before ``delta_bias`` / softplus).
        A: (dim, N) real state matrix (N <= 256). The models use A < 0 (``-exp(A_log)``). For A > 0 the
            ``cuda`` (mamba-ssm's block scan), ``torch`` (chunks) and AVX-512 ``cpu`` N = 1 (8 steps)
            backends multiply decays over several steps, so where such a product overflows fp32 they give
            inf / NaN even if every state stays finite; ``ref`` and the other ``cpu`` kernels step one at
            a time.
        B, C: (batch, N, L) shared by all channels, or (batch, G, N, L) grouped: channel d uses group
            ``d // (dim // G)``.
        D: optional (dim,) skip weight. z: optional (batch, dim, L) gate (output times ``silu(z)``).
        delta_bias: optional (dim,) added to delta. delta_softplus: apply softplus (threshold 20) to delta.
        return_last_state: also return the final state (batch, dim, N), fp32 (fp64 for fp64 inputs on the
            cpu / torch / ref backends), without gradient.
        backend: 'cuda' | 'cpu' | 'torch' | 'ref' | 'auto' | None (env var ``MMVSSM_SCAN_BACKEND``, then auto).

    Computation: ``h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t`` from ``h_0 = 0``,
    ``y_t = C_t . h_t + D u_t`` (times ``silu(z_t)``), in fp32 whatever the input dtype (fp64 inputs
    compute in fp64 on the cpu/torch/ref backends), output cast to ``u.dtype``; autocast is disabled inside.

    Returns:
        out (batch, dim, L) in u's dtype, or ``(out, last_state)`` if ``return_last_state``.
    """
    _check(u, delta, A, B, C, D, z, delta_bias)
    name, error = _resolve_for_call(backend, u.device)
    if error is not None:
        raise _ERRORS[error[0]](error[1])
    if u.device.type == 'cpu':
        map_math_constant_pages()  # every CPU backend timed in the same process state (see math_pages)
    # torch.compile / export, and dispatch modes (FlopCounterMode, FakeTensorMode...): the custom op
    # (scan_custom_op), which they can trace, count or run on fake tensors
    if selective_scan_op is not None and traceable_only():
        # no autocast region here: custom ops pass through autocast, and each backend disables it itself
        inputs = (u, delta, A, B, C, D, z, delta_bias)
        save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
        out, last, _, _ = selective_scan_op(*inputs, bool(delta_softplus), bool(return_last_state), save, name)
        return (out, last) if return_last_state else out
    fn = _FUNCTIONS[name]
    # whether a backward can follow (the cpu / torch forwards then keep chunk states); always while tracing:
    # the trace records the flag as a constant, and its graph may be checked or run under other grad modes
    extra = (torch.is_grad_enabled() or torch.jit.is_tracing(),) if name in ('cpu', 'torch') else ()
    with no_autocast(u.device.type):
        out, last = fn.apply(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), bool(return_last_state),
                             *extra)
    return (out, last) if return_last_state else out
