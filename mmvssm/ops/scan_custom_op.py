"""The selective scan as ``torch.library`` custom ops, for ``torch.compile``, ``torch.export`` and
dispatch modes.

Eager code calls the backends' ``torch.autograd.Function`` classes directly (FLOP counters attach to
them in ``torch.jit`` traces). Those cannot be traced by ``torch.compile`` / ``torch.export``: the
``cpu`` and ``cuda`` kernels read data pointers, which fake tensors do not have; and a dispatch mode
(``FlopCounterMode``, ``FakeTensorMode``) sees none of a C++ kernel's work. While compiling, or
under a dispatch mode, :func:`~mmvssm.ops.selective_scan` calls ``torch.ops.mmvssm.selective_scan``
instead: an opaque op with a fake (shape) kernel and FLOP formulas (``scan_flops``), which runs the
same Function under the hood, so a compiled or exported graph computes exactly what eager code does.

Backward: ``mmvssm::selective_scan_backward``. With the ``cpu``, ``cuda`` and ``torch`` backends the
forward op also returns what the backend keeps for its backward when ``save_for_backward`` is set (a
gradient will be asked): the chunk states, flattened (cpu: (batch, ceil(L / K), N, dim) checkpoints;
cuda: mamba-ssm's x, (batch, dim, ceil(L / 2048), 2N) fp32; torch: the chunk entry states), and for
cuda and torch with z the pre-gate output; the backward op runs the backend's backward on them, as the
Functions do. (Flat: a 4-d shape would make ``torch.compile`` guard on whether the chunk count is 1,
and compile again for longer sequences. The torch backend's chunk length comes from the square root of
L, which a symbolic size cannot go through without a guard: with symbolic sizes the fake kernel gives its
saved states a data-dependent length instead.) The ``ref`` backend returns empty tensors there, and its
backward recomputes the forward and differentiates it. Double backward is not supported, as in eager
mode.
"""
import contextlib
import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor
from torch.fx.experimental.symbolic_shapes import is_concrete_int

from ._common import compute_dtype, input_metas
from .scan_cpu import SelectiveScanCpu, checkpoint_shape, cpu_scan_backward, cpu_scan_forward, kernel_operands
from .scan_cuda import (SelectiveScanCuda, chunk_states_shape, cuda_io_dtype, cuda_operands, cuda_scan_backward,
                        cuda_scan_forward)
from .scan_flops import register_torch_flop_formulas
from .scan_ref import SelectiveScanRef
from .scan_torch import SelectiveScanTorch, entry_states_shape, torch_scan_backward, torch_scan_forward

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


def _state_dtype(u, backend):
    """dtype of the last state and of the saved chunk states: fp32 for cuda, else the compute dtype."""
    return torch.float32 if backend == 'cuda' else compute_dtype(u.dtype)


def _io_dtype(u, backend):
    """dtype of the saved pre-gate output (cuda: the kernel's, torch: the compute dtype; else a placeholder)."""
    if backend == 'cuda':
        return cuda_io_dtype(u.dtype)
    return compute_dtype(u.dtype) if backend == 'torch' else u.dtype


def _saved_shapes(u, A, B, C, z, backend, save):
    """Shapes of the op's ``saved`` (flat chunk states) and ``saved_out`` outputs."""
    if not save or backend not in ('cpu', 'cuda', 'torch'):
        return (0,), (0,)
    out_shape = tuple(u.shape) if backend in ('cuda', 'torch') and z is not None else (0,)
    if backend == 'torch' and not all(is_concrete_int(s) for s in (*u.shape, A.shape[1])):
        return (torch.library.get_ctx().new_dynamic_size(),), out_shape
    if backend == 'cpu':
        states = checkpoint_shape(u, A)
    elif backend == 'cuda':
        states = chunk_states_shape(u, A)
    else:
        states = entry_states_shape(u, A, B, C)
    return (math.prod(states),), out_shape


def _dense(t):
    """``t`` as the fake kernels promise their outputs: contiguous from offset 0 (a backend may return a
    strided result, e.g. ``ref``'s last state follows A's strides)."""
    return t if t.is_contiguous() and t.storage_offset() == 0 else t.clone(memory_format=torch.contiguous_format)


def _forward(backend, inputs, delta_softplus, return_last_state, save):
    """``(out, last state, saved, saved_out)``: the cpu / cuda / torch state for their backward when
    ``save`` (chunk states flat; cuda / torch with z: the pre-gate output too), None where nothing is saved."""
    u = inputs[0]
    if backend == 'cpu':
        out, last, ckpt, _, _ = cpu_scan_forward(inputs, delta_softplus, return_last_state, save)
        return out, last, (ckpt.view(-1) if save else None), None
    if backend == 'cuda' and save:
        out, last, x, out_pre = cuda_scan_forward(cuda_operands(*inputs), delta_softplus)
        return out.to(u.dtype), last, x.reshape(-1), out_pre
    if backend == 'torch' and save:
        out, last, H_in, y = torch_scan_forward(inputs, delta_softplus, True)
        return out, last, H_in.reshape(-1), y
    with torch.no_grad():
        out, last = _apply(backend, inputs, delta_softplus, return_last_state, False)
    return out, last, None, None


def _backward_from_saved(backend, tensors, saved, saved_out, dout, delta_softplus):
    """The cpu / cuda / torch backward on the state :func:`_forward` saved (all 8 gradients, None for
    absent inputs), or None when nothing was saved."""
    if backend not in ('cpu', 'cuda', 'torch') or not saved.numel():
        return None
    u, A, z = tensors[0], tensors[2], tensors[6]
    metas, needs = input_metas(tensors), [True] * 8
    out_pre = saved_out if z is not None else None  # cuda / torch: the pre-gate output
    if backend == 'torch':
        H_in = saved.view(entry_states_shape(u, A, tensors[3], tensors[4]))
        return torch_scan_backward(tensors, H_in, out_pre, dout, delta_softplus, metas, needs)
    if backend == 'cpu':
        io_dtype, ops = kernel_operands(*tensors)
        ckpt = saved.view(checkpoint_shape(u, A))
        return cpu_scan_backward(ops, ckpt, dout, delta_softplus, io_dtype, metas, needs)
    x = saved.view(chunk_states_shape(u, A))
    return cuda_scan_backward(cuda_operands(*tensors), x, out_pre, dout, delta_softplus, metas, needs)


def _define_ops():
    """Define ``mmvssm::selective_scan`` (with its fake kernel and autograd) and its backward op."""

    @torch.library.custom_op('mmvssm::selective_scan', mutates_args=())
    def selective_scan_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                          z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool,
                          return_last_state: bool, save_for_backward: bool,
                          backend: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(out (batch, dim, L) in u's dtype, last state (batch, dim, N) or (0,) when not asked, saved,
        saved_out)``.

        Arguments as :func:`~mmvssm.ops.selective_scan`; ``backend`` is a resolved name ('cpu', ...).
        ``saved``: the cpu / cuda / torch chunk states, flat, when ``save_for_backward``, else (0,);
        ``saved_out``: cuda / torch with z, the pre-gate output, else (0,).
        """
        inputs = (u, delta, A, B, C, D, z, delta_bias)
        out, last, saved, saved_out = _forward(backend, inputs, delta_softplus, return_last_state,
                                               save_for_backward)
        if not return_last_state:
            last = u.new_empty((0,), dtype=_state_dtype(u, backend))
        if saved is None:
            saved = u.new_empty((0,), dtype=_state_dtype(u, backend))
        if saved_out is None:
            saved_out = u.new_empty((0,), dtype=_io_dtype(u, backend))
        return tuple(_dense(t) for t in (out, last, saved, saved_out))

    @selective_scan_op.register_fake
    def _selective_scan_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                             save_for_backward, backend):
        last_shape = (u.shape[0], u.shape[1], A.shape[1]) if return_last_state else (0,)
        saved_shape, out_shape = _saved_shapes(u, A, B, C, z, backend, save_for_backward)
        state = _state_dtype(u, backend)
        return (u.new_empty(u.shape), u.new_empty(last_shape, dtype=state), u.new_empty(saved_shape, dtype=state),
                u.new_empty(out_shape, dtype=_io_dtype(u, backend)))

    @torch.library.custom_op('mmvssm::selective_scan_backward', mutates_args=())
    def selective_scan_backward_op(dout: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                                   D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor],
                                   saved: Tensor, saved_out: Tensor, delta_softplus: bool,
                                   backend: str) -> List[Tensor]:
        """Gradients of the given (not None) inputs, in ``u, delta, A, B, C, D, z, delta_bias`` order, each
        with its input's shape and dtype: from ``saved`` / ``saved_out``, else by recomputing the forward."""
        tensors = (u, delta, A, B, C, D, z, delta_bias)
        grads = _backward_from_saved(backend, tensors, saved, saved_out, dout, delta_softplus)
        if grads is not None:  # dense, as the fake kernel's (the torch backend's are permuted views)
            return [_dense(g) for g in grads if g is not None]
        inputs = [None if t is None else t.detach().requires_grad_(True) for t in tensors]
        present = [t for t in inputs if t is not None]
        with _eager_dispatch_keys(), torch.enable_grad():
            out, _ = _apply(backend, inputs, delta_softplus, False, True)
            grads = torch.autograd.grad(out, present, dout, allow_unused=True)
        return [torch.zeros_like(t, memory_format=torch.contiguous_format) if g is None else _dense(g)
                for t, g in zip(present, grads)]

    @selective_scan_backward_op.register_fake
    def _selective_scan_backward_fake(dout, u, delta, A, B, C, D, z, delta_bias, saved, saved_out, delta_softplus,
                                      backend):
        return [t.new_empty(t.shape) for t in (u, delta, A, B, C, D, z, delta_bias) if t is not None]

    def _setup_context(ctx, inputs, output):
        *tensors, delta_softplus, _, _, backend = inputs
        ctx.save_for_backward(*tensors, output[2], output[3])
        ctx.mark_non_differentiable(*output[1:])  # last state and saved state: no gradient, as in eager mode
        ctx.delta_softplus, ctx.backend = delta_softplus, backend
        ctx.present = [t is not None for t in tensors]

    def _backward(ctx, dout, dlast, dsaved, dsaved_out):
        *tensors, saved, saved_out = ctx.saved_tensors
        grads = iter(selective_scan_backward_op(dout.contiguous(), *tensors, saved, saved_out, ctx.delta_softplus,
                                                ctx.backend))
        result = [next(grads) if present else None for present in ctx.present]
        return (*result, None, None, None, None)

    selective_scan_op.register_autograd(_backward, setup_context=_setup_context)
    register_torch_flop_formulas(torch.ops.mmvssm.selective_scan, torch.ops.mmvssm.selective_scan_backward)
    return selective_scan_op


#: ``torch.ops.mmvssm.selective_scan`` (None before torch 2.4: no ``torch.library.custom_op``; compiling
#: then meets the Functions, as before).
selective_scan_op = _define_ops() if hasattr(torch.library, 'custom_op') else None
