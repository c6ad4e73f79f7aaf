"""``cuda`` backend: mamba-ssm's ``selective_scan_cuda`` extension, called like mamba-ssm's ``SelectiveScanFn``.

``selective_scan_cuda`` is imported directly and lazily (only for CUDA tensors): ``import mamba_ssm``
itself needs Triton and, from mamba-ssm HEAD on, may ship without the op. Install with
``pip install mmvssm[cuda]`` (``MAMBA_KEEP_CUDA_BUILD=TRUE`` for mamba-ssm releases after 2.3.2).
"""
import importlib
import importlib.util
import sys

import torch

from ._common import as_4d, broadcast_groups, grads_to_inputs, input_metas

_MODULE_NAME = 'selective_scan_cuda'
_INSTALL_HINT = ("install mamba-ssm with its CUDA op: `pip install mmvssm[cuda]` "
                 "(`MAMBA_KEEP_CUDA_BUILD=TRUE pip install mamba-ssm --no-build-isolation` for mamba-ssm > 2.3.2)")


_load_error = None  # why the last import failed (kept: a missing or broken module is not retried per call)


def cuda_module_status():
    """(available, reason) without importing the extension (no CUDA libraries are loaded); a failed import
    (:func:`load_cuda_module`) is reported as such."""
    if not torch.cuda.is_available():
        return False, 'torch.cuda.is_available() is False (no GPU or CPU-only torch build)'
    if _load_error is not None and sys.modules.get(_MODULE_NAME) is None:
        return False, _load_error
    try:
        spec = importlib.util.find_spec(_MODULE_NAME)
    except (ImportError, ValueError) as e:
        return False, f'{_MODULE_NAME} lookup failed ({e}); {_INSTALL_HINT}'
    if spec is None:
        return False, f'{_MODULE_NAME} is not installed; {_INSTALL_HINT}'
    return True, f'{_MODULE_NAME} found ({spec.origin})'


def load_cuda_module():
    """Import ``selective_scan_cuda``; returns ``(module or None, reason)``. A failure is remembered and not
    retried (an import attempt costs 40-130 us per scan call) unless the module appears in ``sys.modules``."""
    global _load_error
    mod = sys.modules.get(_MODULE_NAME)
    if mod is not None:
        return mod, ''
    if _load_error is not None:
        return None, _load_error
    try:
        return importlib.import_module(_MODULE_NAME), ''
    except Exception as e:  # ImportError, or an OSError / undefined symbol from a mismatched build
        _load_error = f'cannot import {_MODULE_NAME} ({type(e).__name__}: {e}); {_INSTALL_HINT}'
        return None, _load_error


def _lastdim_contiguous(t):
    return t if t is None or t.stride(-1) == 1 else t.contiguous()


def _module():
    mod, reason = load_cuda_module()
    if mod is None:
        raise RuntimeError(reason)
    return mod


def cuda_io_dtype(dtype):
    """The dtype the kernel reads u / delta / z / B / C in and writes out in: fp32, fp16 or bf16 as given,
    anything else as fp32."""
    return dtype if dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.float32


def cuda_operands(u, delta, A, B, C, D, z, delta_bias):
    """The kernel's operands ``[u, delta, A, B, C, D, z, delta_bias]``: u / delta / z / B / C in
    :func:`cuda_io_dtype` with a unit last stride, A / D / delta_bias fp32 contiguous, B / C as
    (batch, G, N, L) with one G."""
    io = cuda_io_dtype(u.dtype)
    u, delta = _lastdim_contiguous(u.to(io)), _lastdim_contiguous(delta.to(io))
    z = None if z is None else _lastdim_contiguous(z.to(io))
    B, C = broadcast_groups(as_4d(_lastdim_contiguous(B.to(io))), as_4d(_lastdim_contiguous(C.to(io))))
    D = None if D is None else D.float().contiguous()
    delta_bias = None if delta_bias is None else delta_bias.float().contiguous()
    return [u, delta, A.float().contiguous(), B, C, D, z, delta_bias]


def chunk_states_shape(u, A):
    """Shape of the chunk states ``x`` mamba-ssm's forward returns: (batch, dim, ceil(L / 2048), 2N), fp32."""
    return (u.shape[0], u.shape[1], (u.shape[2] + 2047) // 2048, 2 * A.shape[1])


def cuda_scan_forward(ops, delta_softplus):
    """``(out (gated when z is given), last state (batch, dim, N) fp32, chunk states x, pre-gate out or None)``
    from :func:`cuda_operands`; out and the pre-gate out in the kernel's dtype."""
    u, delta, A, B, C, D, z, delta_bias = ops
    out, x, *rest = _module().fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    last = x[:, :, -1, 1::2].clone().float()  # (batch, dim, dstate); not a view of the saved x
    return (out, last, x, None) if z is None else (rest[0], last, x, out)


def cuda_scan_backward(ops, x, out, dout, delta_softplus, metas, needs):
    """Gradients of the 8 inputs (None where ``needs[i]`` is False or the input was None), each in its
    input's dtype and shape (``metas``: ``input_metas``); ``x``, ``out``: what :func:`cuda_scan_forward`
    returned (``out``: the pre-gate output, None without z)."""
    u, delta, A, B, C, D, z, delta_bias = ops
    dout = _lastdim_contiguous(dout.to(u.dtype))
    du, ddelta, dA, dB, dC, dD, ddelta_bias, *rest = _module().bwd(
        u, delta, A, B, C, D, z, delta_bias, dout, x, out, None, delta_softplus, False)
    grads = [du, ddelta, dA, dB, dC, dD, rest[0] if z is not None else None, ddelta_bias]
    return grads_to_inputs(grads, metas, needs)


class SelectiveScanCuda(torch.autograd.Function):
    """mamba-ssm CUDA kernel: fwd(u, delta, A, B, C, D, z, delta_bias, softplus) (9 args),
    bwd(u, delta, A, B, C, D, z, delta_bias, dout, x, out, None, softplus, False) (14 args)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        inputs = (u, delta, A, B, C, D, z, delta_bias)
        ops = cuda_operands(*inputs)
        out, last, x, out_pre = cuda_scan_forward(ops, delta_softplus)
        ctx.save_for_backward(*ops, x, out_pre)
        ctx.meta = (delta_softplus, input_metas(inputs))
        ctx.mark_non_differentiable(last)
        return out.to(u.dtype), last

    @staticmethod
    def backward(ctx, dout, dlast):
        *ops, x, out_pre = ctx.saved_tensors
        delta_softplus, metas = ctx.meta
        grads = cuda_scan_backward(ops, x, out_pre, dout, delta_softplus, metas, ctx.needs_input_grad)
        return (*grads, None, None)
