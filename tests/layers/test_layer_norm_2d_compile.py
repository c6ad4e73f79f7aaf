"""LayerNorm2d compiles with inductor at symbolic sizes (VSSM's channel-first blocks).

On torch 2.14, inductor failed to order the strides of the permuted map LayerNorm2d returned when H and
W are symbolic ("cannot determine truth value of Relational", pytorch/pytorch#185871), so a compiled
VSSM crashed at its second input size (automatic dynamic shapes). Compiled, it returns a contiguous map.
"""
import torch
from torch import nn

from mmvssm.layers.layer_norm_2d import LayerNorm2d


class _Stage(nn.Module):
    """Patch embedding, a residual depthwise-conv block and a norm: the pattern of a VSS stage."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 4, 4)
        self.norm1, self.norm2 = LayerNorm2d(16), LayerNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)

    def forward(self, x):
        x = self.embed(x)
        x = x + self.dw(self.norm1(x))
        return self.norm2(x)


def test_inductor_dynamic_sizes():
    torch.manual_seed(0)
    model = _Stage()
    compiled = torch.compile(model, dynamic=True)
    for size in ((32, 48), (48, 32)):
        x = torch.randn(2, 3, *size, requires_grad=True)
        y = compiled(x)
        (g,) = torch.autograd.grad(y.square().sum(), [x])
        y_e = model(x)
        (g_e,) = torch.autograd.grad(y_e.square().sum(), [x])
        torch.testing.assert_close(y, y_e, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(g, g_e, rtol=1e-4, atol=1e-4)


def test_eager_output_is_the_permuted_layer_norm():
    """Eager: bit for bit ``F.layer_norm`` over channels-last (VMamba's arithmetic), a permuted view."""
    norm = LayerNorm2d(8)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(2, 8, 5, 7)
    y = norm(x)
    ref = nn.functional.layer_norm(x.permute(0, 2, 3, 1), (8,), norm.weight, norm.bias, norm.eps).permute(0, 3, 1, 2)
    assert torch.equal(y, ref)
