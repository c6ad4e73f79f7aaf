"""``cpu`` backend: the fused C++ kernel ``mmvssm._C`` (sources in ``mmvssm/ops/csrc``).

Forward and backward are single OpenMP kernels, AVX-512 or AVX2 chosen at run time (see the header of
``csrc/selective_scan.cpp``; ``MMVSSM_NO_AVX512=1`` forces AVX2).
u / delta / z are passed in their own dtype (fp32, bf16, fp16 or fp64) when they agree, and are
converted in registers; A, B, C, D and delta_bias are passed in the compute dtype (fp32, or fp64
for fp64 inputs). Contiguous fp32 inputs are used in place, without any copy.
"""
import torch

from ._common import as_4d, broadcast_groups, compute_dtype, grads_to_inputs, input_metas, no_autocast

def _import_extension():
    """``(mmvssm._C or None, why it is missing)``."""
    try:
        from mmvssm import _C as ext  # noqa: N811
        return ext, None
    except ImportError as e:  # not built (pip install without compiler, MMVSSM_NO_EXT=1, ...)
        return None, f'{type(e).__name__}: {e}'


# Imported with this module (0.7 ms), not at the first scan: a scan first called inside a torch.compile
# trace changed these globals while dynamo was tracing reads of them, and building its guards failed
# ("Unexpected type <class 'module'>").
_C, _C_ERROR = _import_extension()


def load_cpu_extension():
    """``(mmvssm._C or None, reason)``."""
    return _C, _C_ERROR


def _prep(t, dtype):
    if t is None:
        return None
    return t.to(dtype).contiguous()


def kernel_operands(u, delta, A, B, C, D, z, delta_bias):
    """The kernel's operands ``(io_dtype, [u, delta, A, B, C, D, z, delta_bias])``: u / delta / z in
    ``io_dtype``, the rest in the compute dtype, contiguous; B / C as (batch, G, N, L) with one G."""
    cdt = compute_dtype(u.dtype)
    io_dtype = u.dtype if u.dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16) else cdt
    if delta.dtype != io_dtype or (z is not None and z.dtype != io_dtype):
        io_dtype = cdt
    Bc, Cc = broadcast_groups(_prep(as_4d(B), cdt), _prep(as_4d(C), cdt))
    return io_dtype, [_prep(u, io_dtype), _prep(delta, io_dtype), _prep(A, cdt), Bc, Cc, _prep(D, cdt),
                      _prep(z, io_dtype), _prep(delta_bias, cdt)]


def checkpoint_shape(u, A):
    """Shape of the chunk checkpoints ``scan_fwd`` saves: (batch, ceil(L / K), N, dim), K = ``chunk_len(N)``."""
    ext, _ = load_cpu_extension()
    N = A.shape[1]
    K = ext.chunk_len(int(N))
    return (u.shape[0], torch.sym_max(1, (u.shape[2] + K - 1) // K), N, u.shape[1])


def cpu_scan_forward(inputs, delta_softplus, return_last_state, save_checkpoints):
    """``(out in u's dtype, last state (or (0,)), chunk checkpoints (or None), io_dtype, operands)``.

    ``inputs``: ``u, delta, A, B, C, D, z, delta_bias`` as :func:`~mmvssm.ops.selective_scan` takes them.
    """
    ext, _ = load_cpu_extension()
    u = inputs[0]
    io_dtype, ops = kernel_operands(*inputs)
    with no_autocast('cpu'):
        out, last, ckpt = ext.scan_fwd(*ops, bool(delta_softplus), bool(return_last_state),
                                       bool(save_checkpoints))
    if out.dtype != u.dtype:
        out = out.to(u.dtype)
    if not return_last_state:
        last = out.new_empty((0,), dtype=compute_dtype(u.dtype))
    return out, last, (ckpt if save_checkpoints else None), io_dtype, ops


def cpu_scan_backward(ops, ckpt, dout, delta_softplus, io_dtype, metas, needs):
    """Gradients of the 8 inputs (None where ``needs[i]`` is False or the input was None), each in its
    input's dtype and shape; ``metas[i]``: ``(dtype, shape)`` of input i, or None."""
    ext, _ = load_cpu_extension()
    with no_autocast('cpu'):
        grads = ext.scan_bwd(*ops, dout.to(io_dtype).contiguous(), ckpt, bool(delta_softplus))
    return grads_to_inputs(grads, metas, needs)


class SelectiveScanCpu(torch.autograd.Function):
    """Fused C++ CPU scan; backward recomputes each chunk from states saved every K steps."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, grad_enabled=True):
        inputs = (u, delta, A, B, C, D, z, delta_bias)
        # chunk checkpoints only when a backward can follow (needs_input_grad is also True under no_grad)
        needs_grad = bool(grad_enabled) and any(ctx.needs_input_grad[:8])
        out, last, ckpt, io_dtype, ops = cpu_scan_forward(inputs, delta_softplus, return_last_state, needs_grad)
        if needs_grad:
            ctx.save_for_backward(*ops, ckpt)
            ctx.meta = (delta_softplus, io_dtype, input_metas(inputs))
        ctx.mark_non_differentiable(last)
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        *ops, ckpt = ctx.saved_tensors
        delta_softplus, io_dtype, metas = ctx.meta
        grads = cpu_scan_backward(ops, ckpt, dout, delta_softplus, io_dtype, metas, ctx.needs_input_grad)
        return (*grads, None, None, None)
