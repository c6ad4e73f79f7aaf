"""``cuda`` backend: mamba-ssm's ``selective_scan_cuda`` extension, called like mamba-ssm's ``SelectiveScanFn``.

``selective_scan_cuda`` is imported directly and lazily (only for CUDA tensors): ``import mamba_ssm``
itself needs Triton and, from mamba-ssm HEAD on, may ship without the op. Install with
``pip install mmvssm[cuda]`` (``MAMBA_KEEP_CUDA_BUILD=TRUE`` for mamba-ssm releases after 2.3.2).
"""
import importlib
import importlib.util
import sys

import torch

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


class SelectiveScanCuda(torch.autograd.Function):
    """mamba-ssm CUDA kernel: fwd(u, delta, A, B, C, D, z, delta_bias, softplus) (9 args),
    bwd(u, delta, A, B, C, D, z, delta_bias, dout, x, out, None, softplus, False) (14 args)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        mod, reason = load_cuda_module()
        if mod is None:
            raise RuntimeError(reason)
        in_dtype = u.dtype
        if in_dtype not in (torch.float32, torch.float16, torch.bfloat16):
            u = u.float()
        u = _lastdim_contiguous(u)
        delta = _lastdim_contiguous(delta.to(u.dtype))
        z = None if z is None else _lastdim_contiguous(z.to(u.dtype))
        A = A.float().contiguous()
        D = None if D is None else D.float().contiguous()
        delta_bias = None if delta_bias is None else delta_bias.float().contiguous()
        ctx.B_shape, ctx.C_shape = B.shape, C.shape
        ctx.B_dtype, ctx.C_dtype = B.dtype, C.dtype
        B = _lastdim_contiguous(B.to(u.dtype))
        C = _lastdim_contiguous(C.to(u.dtype))
        if B.dim() == 3:
            B = B.unsqueeze(1)  # b n l -> b 1 n l
        if C.dim() == 3:
            C = C.unsqueeze(1)
        if B.shape[1] != C.shape[1]:  # one shared, one grouped: the kernel wants one group count
            G = max(B.shape[1], C.shape[1])
            B, C = B.expand(-1, G, -1, -1).contiguous(), C.expand(-1, G, -1, -1).contiguous()
        out, x, *rest = mod.fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        ctx.delta_softplus = delta_softplus
        ctx.has_z = z is not None
        last_state = x[:, :, -1, 1::2].clone()  # (batch, dim, dstate); not a view of the saved x
        if z is None:
            ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, x)
            result = out
        else:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, x, out)
            result = rest[0]
        last_state = last_state.float()
        ctx.mark_non_differentiable(last_state)
        return result.to(in_dtype), last_state

    @staticmethod
    def backward(ctx, dout, dlast):
        mod, reason = load_cuda_module()
        if mod is None:
            raise RuntimeError(reason)
        if ctx.has_z:
            u, delta, A, B, C, D, z, delta_bias, x, out = ctx.saved_tensors
        else:
            u, delta, A, B, C, D, delta_bias, x = ctx.saved_tensors
            z, out = None, None
        dout = _lastdim_contiguous(dout.to(u.dtype))
        du, ddelta, dA, dB, dC, dD, ddelta_bias, *rest = mod.bwd(
            u, delta, A, B, C, D, z, delta_bias, dout, x, out, None, ctx.delta_softplus, False)
        dz = rest[0] if ctx.has_z else None
        if len(ctx.B_shape) == 3:
            dB = dB.sum(1)
        elif dB.shape[1] != ctx.B_shape[1]:
            dB = dB.sum(1, keepdim=True)
        if len(ctx.C_shape) == 3:
            dC = dC.sum(1)
        elif dC.shape[1] != ctx.C_shape[1]:
            dC = dC.sum(1, keepdim=True)
        return (du, ddelta, dA, dB.to(ctx.B_dtype), dC.to(ctx.C_dtype), dD if D is not None else None,
                dz, ddelta_bias if delta_bias is not None else None, None, None)
