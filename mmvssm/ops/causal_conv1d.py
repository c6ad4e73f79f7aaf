"""Causal depthwise conv1d (+ SiLU), the short conv in front of every Mamba scan branch.

:func:`causal_conv1d_silu` runs the fused C++ forward of ``mmvssm._C`` when no gradient is needed
(inference: fp32 CPU tensors), and ``F.conv1d`` + SiLU otherwise (training, other dtypes and
devices, autocast, ``torch.func`` transforms, tracing for FLOP counts, ``torch.compile`` /
``torch.export``), which autograd differentiates. Both give the same results for the same call.
"""
from typing import Optional

import torch
import torch.nn.functional as F

from ._common import traceable_only
from .scan_cpu import load_cpu_extension


def causal_depthwise_conv1d(x: torch.Tensor, weight: torch.Tensor,
                            bias: Optional[torch.Tensor]) -> torch.Tensor:
    """Causal depthwise conv of ``x`` ``(B, C, L)`` with ``weight`` ``(C, W)`` -> ``(B, C, L)``:
    ``F.conv1d(x, weight[:, None], bias, padding=W-1, groups=C)[..., :L]`` (mamba-ssm's fallback).

    Hand-written shifted multiply-adds (views of a padded copy) are faster on CPU but, under
    non-reentrant activation checkpointing, kept every block's activations alive (measured: Vim-S
    1024x1024 training step 4.0 GB instead of 1.8 GB), so the autograd path stays on ``F.conv1d``.
    """
    seq_len = x.shape[-1]
    return F.conv1d(x, weight[:, None], bias, padding=weight.shape[1] - 1,
                    groups=weight.shape[0])[..., :seq_len]


def _fused_ok(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> bool:
    """Whether the C++ forward computes what the ``F.conv1d`` path would: no gradient, no tracer,
    no autocast (which runs ``F.conv1d`` in bf16), no ``torch.func`` wrapper (no data pointer),
    fp32 CPU ``(B, C, L)`` / ``(C, W)`` tensors."""
    tensors = [x, weight] + ([bias] if bias is not None else [])
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    if torch.jit.is_tracing() or torch.jit.is_scripting() or traceable_only():
        return False
    if torch.is_autocast_enabled('cpu') or any(
            torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors):
        return False
    return (x.dim() == 3 and weight.dim() == 2
            and all(t.device.type == 'cpu' and t.dtype == torch.float32 for t in tensors)
            and weight.shape[1] <= 8 and load_cpu_extension()[0] is not None)


def causal_conv1d_silu(x: torch.Tensor, weight: torch.Tensor,
                       bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``silu(causal_depthwise_conv1d(x, weight, bias))``: ``(B, C, L)`` -> ``(B, C, L)``."""
    if _fused_ok(x, weight, bias):
        ext = load_cpu_extension()[0]
        return ext.causal_conv1d_silu_fwd(x.contiguous(), weight.contiguous(),
                                          None if bias is None else bias.contiguous())
    return F.silu(causal_depthwise_conv1d(x, weight, bias))
