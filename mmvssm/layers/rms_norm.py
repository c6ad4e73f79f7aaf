"""RMSNorm with the optional fused residual add of mamba-ssm's ``rms_norm_fn``.

Pure PyTorch; numerically follows ``mamba_ssm.ops.triton.layer_norm`` (``_layer_norm_fwd_1pass_kernel``):
the add and the normalisation run in fp32 and the output is cast back to the input dtype.
"""
from typing import Optional, Tuple, Union

import torch
from torch import nn


class RMSNorm(nn.Module):
    """``y = x / sqrt(mean(x^2) + eps) * weight`` over the last dim (no bias, as Vim's ``RMSNorm``).

    Args:
        dim: normalised (last) dimension.
        eps: added to the mean square (Vim: ``norm_epsilon=1e-5``).
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None,
                prenorm: bool = False, residual_in_fp32: bool = False
                ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Normalise ``x + residual``.

        Returns ``y`` or, with ``prenorm=True``, ``(y, residual_out)`` where ``residual_out`` is the
        sum in the residual's dtype; without a residual, ``x`` in fp32 when ``residual_in_fp32``,
        else ``x`` itself; exactly as ``rms_norm_fn``.
        """
        x32 = x.float()
        if residual is not None:
            x32 = x32 + residual.float()
        y = x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + self.eps) * self.weight.float()
        y = y.to(x.dtype)
        if not prenorm:
            return y
        if residual is not None:  # residual_in_fp32 only chooses the first block's dtype
            res_out = x32.to(residual.dtype)
        else:
            res_out = x32 if residual_in_fp32 else x
        return y, res_out

    def extra_repr(self) -> str:
        return f'{self.weight.shape[0]}, eps={self.eps}'
