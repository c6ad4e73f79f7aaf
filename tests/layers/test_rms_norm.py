"""RMSNorm's fused residual add: dtypes and values as mamba-ssm's ``rms_norm_fn``
(``residual_dtype = residual.dtype if residual is not None else fp32 if residual_in_fp32``)."""
import pytest
import torch

from mmvssm.layers.rms_norm import RMSNorm


@pytest.mark.parametrize('residual_in_fp32', [False, True])
@pytest.mark.parametrize('x_dtype, res_dtype', [
    (torch.bfloat16, None), (torch.float32, None), (torch.bfloat16, torch.bfloat16),
    (torch.bfloat16, torch.float32), (torch.float32, torch.bfloat16),
    (torch.float64, torch.float64), (torch.float32, torch.float64)])
def test_prenorm_residual_dtype_and_values(x_dtype, res_dtype, residual_in_fp32):
    torch.manual_seed(0)
    norm = RMSNorm(16)
    norm.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 5, 16).to(x_dtype)
    res = None if res_dtype is None else torch.randn(2, 5, 16).to(res_dtype)
    y, res_out = norm(x, res, prenorm=True, residual_in_fp32=residual_in_fp32)
    if res is not None:
        want_dtype = res_dtype
    else:
        want_dtype = torch.float32 if residual_in_fp32 else x_dtype
    assert res_out.dtype == want_dtype and y.dtype == x_dtype
    total = x.double() + (0 if res is None else res.double())
    torch.testing.assert_close(res_out.double(), total.to(want_dtype).double(),
                               rtol=1e-6, atol=1e-6)
    want_y = total * torch.rsqrt(total.square().mean(-1, keepdim=True) + norm.eps) * norm.weight
    tol = 1e-5 if x_dtype != torch.bfloat16 else 2e-2
    torch.testing.assert_close(y.double(), want_y.to(x_dtype).double(), rtol=tol, atol=tol)
    torch.testing.assert_close(norm(x, res, residual_in_fp32=residual_in_fp32), y)
