"""The selective scan as ``torch.library`` custom ops, for ``torch.compile``, ``torch.export`` and
dispatch modes.

Eager code calls the backends' ``torch.autograd.Function`` classes directly (FLOP counters attach to
them in ``torch.jit`` traces). Those cannot be traced by ``torch.compile`` / ``torch.export``: the
``cpu`` and ``cuda`` kernels read data pointers, which fake tensors do not have; and a dispatch mode
(``FlopCounterMode``, ``FakeTensorMode``) sees none of a C++ kernel's work. While compiling, or
under a dispatch mode, :func:`~mmvssm.ops.selective_scan` calls ``torch.ops.mmvssm.selective_scan``
instead: an opaque op with a fake (shape) kernel and FLOP formulas (``scan_flops``), which runs the
same Function under the hood, so a compiled or exported graph computes exactly what eager code does.

Backward: ``mmvssm::selective_scan_backward``. With the ``cpu`` backend the forward op also returns
the kernel's chunk checkpoints (batch, ceil(L / K), N, dim), flattened, when ``save_for_backward`` is
set (a gradient will be asked), and the backward runs the kernel's backward on them, as the Function
does. (Flat: a 4-d shape would make ``torch.compile`` guard on whether ceil(L / K) is 1, and compile
again for longer sequences.)
The other backends return an empty tensor there, and their backward recomputes the forward (with
the chunk states the backend saves) and differentiates it: their saved state is not one tensor of a
shape the fake kernel could tell. Double backward is not supported, as in eager mode.
"""
import contextlib
import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ._common import compute_dtype
from .scan_cpu import (SelectiveScanCpu, checkpoint_shape, cpu_scan_backward, cpu_scan_forward, input_metas,
                       kernel_operands)
from .scan_cuda import SelectiveScanCuda
from .scan_flops import register_torch_flop_formulas
from .scan_ref import SelectiveScanRef
from .scan_torch import SelectiveScanTorch

#: backend name -> its ``torch.autograd.Function`` class.
SCAN_FUNCTIONS = {
    'cuda': SelectiveScanCuda,
    'cpu': SelectiveScanCpu,
    'torch': SelectiveScanTorch,
    'ref': SelectiveScanRef,
}


def _apply(backend, inputs, delta_softplus, return_last_state, grad_enabled):
    """Run the backend's Function; ``grad_enabled`` tells the cpu / torch forwards to keep chunk states."""
    extra = (grad_enabled,) if backend in ('cpu', 'torch') else ()
    return SCAN_FUNCTIONS[backend].apply(*inputs, delta_softplus, return_last_state, *extra)


#: the dispatch key sets of plain eager code (read at import: no mode, no autocast region)
_EAGER_KEYS = (torch._C._dispatch_tls_local_include_set(), torch._C._dispatch_tls_local_exclude_set())


def _eager_dispatch_keys():
    """Plain eager dispatch inside an op's kernel (as torch's leaf-function HOP does): a kernel runs with
    the autograd keys excluded, and under a dispatch mode with every key above ``Python`` excluded
    (functorch's too), so the recomputed forward would record no graph and ``torch.func`` would fail."""
    guard = getattr(torch._C, '_ForceDispatchKeyGuard', None)
    return contextlib.nullcontext() if guard is None else guard(*_EAGER_KEYS)


def _last_state_dtype(u, backend):
    return torch.float32 if backend == 'cuda' else compute_dtype(u.dtype)


def _define_ops():
    """Define ``mmvssm::selective_scan`` (with its fake kernel and autograd) and its backward op."""

    @torch.library.custom_op('mmvssm::selective_scan', mutates_args=())
    def selective_scan_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                          z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool,
                          return_last_state: bool, save_for_backward: bool,
                          backend: str) -> Tuple[Tensor, Tensor, Tensor]:
        """``(out (batch, dim, L) in u's dtype, last state (batch, dim, N) or (0,) when not asked, saved)``.

        Arguments as :func:`~mmvssm.ops.selective_scan`; ``backend`` is a resolved name ('cpu', ...).
        ``saved``: the cpu kernel's chunk checkpoints, flat, when ``save_for_backward``, else (0,).
        """
        inputs = (u, delta, A, B, C, D, z, delta_bias)
        if backend == 'cpu':
            out, last, saved, _, _ = cpu_scan_forward(inputs, delta_softplus, return_last_state, save_for_backward)
            saved = None if saved is None else saved.view(-1)
        else:
            with torch.no_grad():
                out, last = _apply(backend, inputs, delta_softplus, return_last_state, False)
            saved = None
        if not return_last_state:
            last = u.new_empty((0,), dtype=_last_state_dtype(u, backend))
        if saved is None:
            saved = u.new_empty((0,), dtype=compute_dtype(u.dtype))
        return out, last, saved

    @selective_scan_op.register_fake
    def _selective_scan_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                             save_for_backward, backend):
        dtype = _last_state_dtype(u, backend)
        last_shape = (u.shape[0], u.shape[1], A.shape[1]) if return_last_state else (0,)
        saved_shape = (math.prod(checkpoint_shape(u, A)),) if backend == 'cpu' and save_for_backward else (0,)
        return (u.new_empty(u.shape), u.new_empty(last_shape, dtype=dtype),
                u.new_empty(saved_shape, dtype=compute_dtype(u.dtype)))

    @torch.library.custom_op('mmvssm::selective_scan_backward', mutates_args=())
    def selective_scan_backward_op(dout: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                                   D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor],
                                   saved: Tensor, delta_softplus: bool, backend: str) -> List[Tensor]:
        """Gradients of the given (not None) inputs, in ``u, delta, A, B, C, D, z, delta_bias`` order, each
        with its input's shape and dtype: from ``saved`` (cpu checkpoints), else by recomputing the forward."""
        tensors = (u, delta, A, B, C, D, z, delta_bias)
        if backend == 'cpu' and saved.numel():
            io_dtype, ops = kernel_operands(*tensors)
            metas = input_metas(tensors)
            ckpt = saved.view(checkpoint_shape(u, A))
            grads = cpu_scan_backward(ops, ckpt, dout, delta_softplus, io_dtype, metas, [True] * 8)
            return [g for g in grads if g is not None]
        inputs = [None if t is None else t.detach().requires_grad_(True) for t in tensors]
        present = [t for t in inputs if t is not None]
        with _eager_dispatch_keys(), torch.enable_grad():
            out, _ = _apply(backend, inputs, delta_softplus, False, True)
            grads = torch.autograd.grad(out, present, dout, allow_unused=True)
        return [torch.zeros_like(t) if g is None else g.contiguous() for t, g in zip(present, grads)]

    @selective_scan_backward_op.register_fake
    def _selective_scan_backward_fake(dout, u, delta, A, B, C, D, z, delta_bias, saved, delta_softplus, backend):
        return [t.new_empty(t.shape) for t in (u, delta, A, B, C, D, z, delta_bias) if t is not None]

    def _setup_context(ctx, inputs, output):
        *tensors, delta_softplus, _, _, backend = inputs
        ctx.save_for_backward(*tensors, output[2])
        ctx.delta_softplus, ctx.backend = delta_softplus, backend
        ctx.present = [t is not None for t in tensors]

    def _backward(ctx, dout, dlast, dsaved):
        *tensors, saved = ctx.saved_tensors
        grads = iter(selective_scan_backward_op(dout.contiguous(), *tensors, saved, ctx.delta_softplus,
                                                ctx.backend))
        result = [next(grads) if present else None for present in ctx.present]
        return (*result, None, None, None, None)

    selective_scan_op.register_autograd(_backward, setup_context=_setup_context)
    register_torch_flop_formulas(torch.ops.mmvssm.selective_scan, torch.ops.mmvssm.selective_scan_backward)
    return selective_scan_op


#: ``torch.ops.mmvssm.selective_scan`` (None before torch 2.4: no ``torch.library.custom_op``; compiling
#: then meets the Functions, as before).
selective_scan_op = _define_ops() if hasattr(torch.library, 'custom_op') else None
