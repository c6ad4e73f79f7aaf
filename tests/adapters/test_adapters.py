"""Multi-scale adapters: strides 4/8/16/32 from stride-16 (or 8) maps, norms, errors."""
import subprocess
import sys

import pytest
import torch

from mmvssm.adapters import DeconvPyramid, SimpleFeaturePyramid, build_norm2d
from mmvssm.layers.layer_norm_2d import LayerNorm2d

GRIDS = [(4, 4), (13, 20), (7, 9)]  # stride-16 grids of 64x64, 200x320, 97x131 inputs
NORMS = [dict(type='LN'), dict(type='GN', num_groups=4), dict(type='BN'), None]


def maps(grid, c=32, n=4):
    torch.manual_seed(0)
    return tuple(torch.randn(1, c, *grid, requires_grad=True) for _ in range(n))


def expected(grid, s, in_stride=16):
    """Size at stride ``s`` of a padded image covered by ``grid`` cells of ``in_stride``."""
    return tuple(-(-g * in_stride // s) for g in grid)


@pytest.mark.parametrize('grid', GRIDS)
@pytest.mark.parametrize('norm_cfg', NORMS, ids=lambda c: c['type'] if c else 'none')
def test_simple_feature_pyramid(grid, norm_cfg):
    neck = SimpleFeaturePyramid(32, out_channels=8, norm_cfg=norm_cfg)
    xs = maps(grid)
    outs = neck(xs)
    assert len(outs) == 4
    for s, o in zip((4, 8, 16, 32), outs):
        assert o.shape == (1, 8, *expected(grid, s))
    sum(o.mean() for o in outs).backward()
    assert xs[-1].grad is not None and all(x.grad is None for x in xs[:-1])  # uses the last map
    assert all(p.grad is not None for p in neck.parameters())
    assert all(m[0].bias is None for m in neck.lateral_convs) == (norm_cfg is not None)


@pytest.mark.parametrize('grid', GRIDS)
@pytest.mark.parametrize('norm_cfg', NORMS, ids=lambda c: c['type'] if c else 'none')
def test_deconv_pyramid(grid, norm_cfg):
    neck = DeconvPyramid(32, norm_cfg=norm_cfg)
    xs = maps(grid)
    outs = neck(xs)
    for s, o in zip((4, 8, 16, 32), outs):
        assert o.shape == (1, 32, *expected(grid, s))
    torch.testing.assert_close(outs[2], xs[2])  # fpn3 is the identity on the 3rd map
    sum(o.mean() for o in outs).backward()
    assert all(x.grad is not None for x in xs)  # fpn_i applied to map i
    # official module indices: fpn1 = ConvT(0), norm(1), GELU(2), ConvT(3)
    names = {n for n, _ in neck.named_parameters()}
    assert {'fpn1.0.weight', 'fpn1.3.weight', 'fpn2.weight'} <= names
    assert ('fpn1.1.weight' in names) == (norm_cfg is not None)


def test_out_channels_num_outs_and_single_map():
    xs = maps((5, 6))
    outs = DeconvPyramid(32, out_channels=16)(xs)
    assert [o.shape[1] for o in outs] == [16] * 4
    rep = DeconvPyramid(32)(xs[:1])  # one map serves all four levels (as the official code)
    assert [tuple(o.shape[-2:]) for o in rep] == [(20, 24), (10, 12), (5, 6), (3, 3)]
    five = SimpleFeaturePyramid(32, out_channels=8, num_outs=5)(xs)
    assert [tuple(o.shape[-2:]) for o in five] == [(20, 24), (10, 12), (5, 6), (3, 3), (2, 2)]


def test_stride8_inputs():
    xs = maps((9, 5))
    for neck in (SimpleFeaturePyramid(32, out_channels=8, in_stride=8), DeconvPyramid(32, in_stride=8)):
        outs = neck(xs)
        assert [tuple(o.shape[-2:]) for o in outs] == [(18, 10), (9, 5), (5, 3), (3, 2)]


def test_norm_builder():
    ln = build_norm2d(dict(type='LN'), 8)
    assert isinstance(ln, LayerNorm2d) and ln.eps == 1e-6
    x = torch.randn(2, 8, 3, 5)
    ref = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (8,), eps=1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(ln(x), ref)
    assert isinstance(build_norm2d(dict(type='GN', num_groups=2), 8), torch.nn.GroupNorm)
    assert isinstance(build_norm2d(dict(type='BN', momentum=0.05), 8), torch.nn.BatchNorm2d)
    sync = build_norm2d(dict(type='SyncBN', requires_grad=False), 8)
    assert isinstance(sync, torch.nn.SyncBatchNorm) and not sync.weight.requires_grad
    assert sync.eval()(x).shape == x.shape  # eval mode runs without a process group
    neck = SimpleFeaturePyramid(32, out_channels=8, norm_cfg=dict(type='SyncBN')).eval()
    assert [o.shape[1] for o in neck(maps((4, 4)))] == [8] * 4
    with pytest.raises(KeyError, match='num_groups'):
        build_norm2d(dict(type='GN'), 8)
    with pytest.raises(KeyError, match='unsupported norm type'):
        build_norm2d(dict(type='IN'), 8)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r'expects a \(B, 32, H, W\) map'):
        SimpleFeaturePyramid(32)(maps((4, 4), c=16))
    with pytest.raises(ValueError, match='1 or 4 maps'):
        DeconvPyramid(32)(maps((4, 4), n=3))
    with pytest.raises(ValueError, match=r'\(B, 32, H, W\)'):
        DeconvPyramid(32)(maps((4, 4), c=8))
    with pytest.raises(ValueError, match='in_stride'):
        DeconvPyramid(32, in_stride=32)
    with pytest.raises(ValueError, match='scale factor'):
        SimpleFeaturePyramid(32, in_stride=32, out_strides=(4,))


def test_import_without_mmcv():
    code = ('import sys; sys.modules["mmcv"] = None; sys.modules["mmengine"] = None\n'
            'import mmvssm.adapters as a; print(a.SimpleFeaturePyramid.__name__)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert 'SimpleFeaturePyramid' in out.stdout


def test_norm_cfg_from_an_inherited_base_keeps_working():
    """mmengine tags dicts inherited from 'mmseg::' bases with '_scope_'; it is not a norm kwarg."""
    from mmvssm.adapters import build_norm2d
    layer = build_norm2d(dict(type='BN', requires_grad=True, _scope_='mmseg'), 8)
    assert isinstance(layer, torch.nn.BatchNorm2d) and layer.num_features == 8


def test_out_strides_must_increase():
    """Unsorted strides made the extra 'stride-64' level a max-pool of the stride-4 map."""
    for strides in [(32, 16, 8, 4), (4, 8, 8, 16), ()]:
        with pytest.raises(ValueError, match='strictly increasing'):
            SimpleFeaturePyramid(32, out_strides=strides, num_outs=len(strides) + 1)
    outs = SimpleFeaturePyramid(32, out_channels=8, out_strides=(8, 16, 32), num_outs=4)(maps((7, 9)))
    assert [tuple(o.shape[-2:]) for o in outs] == [expected((7, 9), s) for s in (8, 16, 32, 64)]


def test_in_index_out_of_range():
    with pytest.raises(ValueError, match='in_index=-1 but got 0 maps'):
        SimpleFeaturePyramid(32)(())
    with pytest.raises(ValueError, match='in_index=4 but got 2 maps'):
        SimpleFeaturePyramid(32, in_index=4)(maps((4, 4), n=2))
    with pytest.raises(ValueError, match='in_index=-3 but got 2 maps'):
        SimpleFeaturePyramid(32, in_index=-3)(maps((4, 4), n=2))
    with pytest.raises(TypeError, match='in_index must be one int'):
        SimpleFeaturePyramid(32, in_index=(0, 1))
    xs = maps((4, 4), n=2)
    SimpleFeaturePyramid(32, in_index=-2)(xs)[0].mean().backward()
    assert xs[0].grad is not None and xs[1].grad is None


def test_in_channels_too_small():
    with pytest.raises(ValueError, match=r'in_channels=2 is too small .* in_channels >= 4'):
        SimpleFeaturePyramid(2, 16)
    with pytest.raises(ValueError, match=r'in_channels=1 is too small .* in_channels >= 2'):
        SimpleFeaturePyramid(1, 16, out_strides=(8, 16, 32))
    outs = SimpleFeaturePyramid(4, 8)(torch.randn(1, 4, 3, 5))  # smallest valid: 1 channel at x4
    assert [o.shape[1] for o in outs] == [8] * 4
    assert SimpleFeaturePyramid(1, 8, out_strides=(16, 32))(torch.randn(1, 1, 3, 5))[1].shape == (1, 8, 2, 3)


def test_deconv_pyramid_maps_of_different_sizes():
    xs = maps((7, 9))
    with pytest.raises(ValueError, match=r'4 maps of one shape .*stride-16.*\(1, 32, 5, 5\)'):
        DeconvPyramid(32)([xs[0], xs[1][..., :5, :5], xs[2], xs[3]])
    with pytest.raises(ValueError, match='4 maps of one shape'):
        DeconvPyramid(32)((xs[0], xs[1], xs[2], torch.randn(2, 32, 7, 9)))  # batch differs
