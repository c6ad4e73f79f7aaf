"""FLOP handles for the selective scan, and the published params/FLOPs of four det/seg models."""
import pytest
import torch
from torch import nn

pytest.importorskip('mmengine')

import mmvssm  # noqa: E402,F401  (registers the handles)
from mmvssm.mm.flops import (count_flops, flop_handles, flops_selective_scan_fn,  # noqa: E402
                             scan_function_names)

Bt, Dt, Lt, Nt = 2, 6, 10, 4


def scan_expected(with_d=True, with_z=False, b=Bt, d=Dt, length=Lt, n=Nt):
    return 9 * b * length * d * n + (b * d * length if with_d else 0) + \
        (b * d * length if with_z else 0)


def test_formula():
    assert flops_selective_scan_fn(1, 4000, 768, 16) == 9 * 4000 * 768 * 16 + 4000 * 768
    assert flops_selective_scan_fn(1, 5, 3, 2, with_D=False, with_Z=True) == 9 * 5 * 3 * 2 + 15


def test_names_cover_ops_and_mamba_ssm():
    names = scan_function_names()
    for n in ('SelectiveScanRef', 'SelectiveScanTorch', 'SelectiveScanCpu', 'SelectiveScanCuda',
              'SelectiveScanFn'):
        assert n in names
    try:
        from mmvssm.ops import SCAN_FUNCTION_NAMES
    except ImportError:
        SCAN_FUNCTION_NAMES = ()
    assert set(SCAN_FUNCTION_NAMES) <= set(names)
    from mmengine.analysis.complexity_analysis import _DEFAULT_SUPPORTED_FLOP_OPS
    for n in names + ('MambaInnerFn', 'CausalConv1dFn'):
        assert f'prim::PythonOp.{n}' in _DEFAULT_SUPPORTED_FLOP_OPS


# A stand-in with mamba-ssm's SelectiveScanFn signature (the handle must not depend on mmvssm.ops).
class SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                return_last_state=False):
        return u * 1.0

    @staticmethod
    def backward(ctx, g):  # pragma: no cover
        return (g,) + (None,) * 9


class FakeScanModule(nn.Module):
    def __init__(self, with_d, with_z, with_bias):
        super().__init__()
        self.with_d, self.with_z, self.with_bias = with_d, with_z, with_bias
        self.A = nn.Parameter(torch.randn(Dt, Nt))
        self.D = nn.Parameter(torch.ones(Dt))
        self.bias = nn.Parameter(torch.zeros(Dt))

    def forward(self, u):
        bc = torch.randn(Bt, Nt, Lt)
        return SelectiveScanFn.apply(u, u, self.A, bc, bc, self.D if self.with_d else None,
                                     u if self.with_z else None,
                                     self.bias if self.with_bias else None, True)


@pytest.mark.parametrize('with_d,with_z,with_bias', [(True, False, True), (True, True, True),
                                                     (False, True, True), (False, False, True),
                                                     (False, False, False)])
def test_scan_handle_on_stand_in(with_d, with_z, with_bias):
    m = FakeScanModule(with_d, with_z, with_bias)
    assert count_flops(m, (torch.randn(Bt, Dt, Lt),)) == scan_expected(with_d, with_z)


def _ops():
    from mmvssm import ops
    return ops


class ScanModule(nn.Module):
    """Calls mmvssm's public ``selective_scan`` the way the mixers do."""

    def __init__(self, with_z, grouped=False, backend=None):
        super().__init__()
        self.with_z, self.grouped, self.backend = with_z, grouped, backend
        self.A_log = nn.Parameter(torch.zeros(Dt, Nt))
        self.D = nn.Parameter(torch.ones(Dt))
        self.dt_bias = nn.Parameter(torch.zeros(Dt))

    def forward(self, u):
        shape = (Bt, 2, Nt, Lt) if self.grouped else (Bt, Nt, Lt)
        bs = torch.ones(shape) * 0.1
        cs = torch.ones(shape) * 0.2
        return _ops().selective_scan(u, u, -torch.exp(self.A_log), bs, cs, D=self.D,
                                     z=u if self.with_z else None, delta_bias=self.dt_bias,
                                     delta_softplus=True, backend=self.backend)


@pytest.mark.parametrize('with_z,grouped', [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize('backend', ['ref', 'torch', 'cpu'])
def test_scan_handle_on_mmvssm_selective_scan(with_z, grouped, backend):
    """Every CPU backend is one traced Function counted by the same formula."""
    usable, why = _ops().available_backends()[backend]
    assert usable, why  # every CPU backend must work on a machine set up by tools/setup_env.sh
    m = ScanModule(with_z, grouped, backend)
    assert count_flops(m, (torch.randn(Bt, Dt, Lt),)) == scan_expected(True, with_z)


def test_stock_get_model_complexity_info_counts_the_scan():
    from mmengine.analysis import get_model_complexity_info
    m = FakeScanModule(True, True, True)
    out = get_model_complexity_info(m, inputs=(torch.randn(Bt, Dt, Lt),), show_table=False,
                                    show_arch=False)
    assert out['flops'] == scan_expected(True, True)


class MambaInnerFn(torch.autograd.Function):
    """Stand-in with mamba-ssm's MambaInnerFn signature."""

    @staticmethod
    def forward(ctx, xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight,
                out_proj_weight, out_proj_bias, A, B=None, C=None, D=None, delta_bias=None,
                B_proj_bias=None, C_proj_bias=None, delta_softplus=True, checkpoint_lvl=1):
        return xz[:, :out_proj_weight.shape[0]].transpose(1, 2) * 1.0

    @staticmethod
    def backward(ctx, g):  # pragma: no cover
        return (None,) * 16


def test_mamba_inner_handle():
    di, r, n, w, dm = 8, 2, 4, 4, 3

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_w = nn.Parameter(torch.randn(di, 1, w))
            self.conv_b = nn.Parameter(torch.randn(di))
            self.x_proj = nn.Parameter(torch.randn(r + 2 * n, di))
            self.dt_proj = nn.Parameter(torch.randn(di, r))
            self.out_proj = nn.Parameter(torch.randn(dm, di))
            self.A = nn.Parameter(torch.randn(di, n))
            self.D = nn.Parameter(torch.randn(di))

        def forward(self, xz):
            return MambaInnerFn.apply(xz, self.conv_w, self.conv_b, self.x_proj, self.dt_proj,
                                      self.out_proj, None, self.A, None, None, self.D, None, None,
                                      None, True)

    b, length = 2, 5
    expected = (b * di * length * w + b * length * di * (r + 2 * n) + b * length * di * r
                + scan_expected(True, True, b, di, length, n) + b * length * di * dm)
    assert count_flops(M(), (torch.randn(b, 2 * di, length),)) == expected


def test_handles_table():
    h = flop_handles()
    assert h['aten::silu'] is None and h['prim::PythonOp.SelectiveScanFn'] is not None


# ----- model-level counts vs the published numbers ---------------------------------------------
REPO = __import__('pathlib').Path(__file__).resolve().parents[2]
# Full-size counts are marked ``slow`` (deselect with ``-m 'not slow'``); they run by default.
SLOW_MARKS = [pytest.mark.slow]

def _backbones():
    from mmvssm import backbones
    return backbones


@pytest.mark.parametrize('family,arch,published', [
    ('VSSM', 'tiny', 4.9e9),        # VMamba-T [s1l8]   (anchors §2.5)
    pytest.param('VSSM', 'tiny_v0', 5.6e9, marks=SLOW_MARKS),  # Vanilla-VMamba-T (d_state 16)
    ('MambaOut', 'tiny', 4.5e9),    # MambaOut-Tiny     (anchors §3.1)
])
def test_backbone_flops_at_224_match_imagenet_tables(family, arch, published):
    """Backbone alone at 224x224 (classifier ~1M MACs left out): within 1% of the rounded table."""
    cls = getattr(_backbones(), family)
    model = cls(arch=arch, out_indices=(3,), out_norm=False).eval()
    with torch.no_grad():
        flops = count_flops(model, (torch.randn(1, 3, 224, 224),))
    assert abs(flops / published - 1) < 0.01, flops


@pytest.mark.slow
@pytest.mark.parametrize('config,params,flops', [
    # VMamba analyze/flops.py records: 49.755M 271163376640 / 61902572 948.7801896960001 G
    ('det/mask_rcnn_vssm_t_fpn_1x_coco.py', 49.755e6, 271.16e9),
    ('seg/upernet_vssm_t_ade20k.py', 61.90e6, 948.78e9),
    # MambaOut paper Tables 2 / 3 (MACs)
    ('det/mask_rcnn_mambaout_t_fpn_1x_coco.py', 43e6, 262e9),
    ('seg/upernet_mambaout_t_ade20k.py', 54e6, 938e9),
])
def test_published_params_and_flops(config, params, flops):
    path = REPO / 'configs' / config
    assert path.is_file(), path
    _backbones()
    from mmengine.config import Config
    from mmengine.registry import MODELS
    assert MODELS.get('VSSM') is not None, 'backbones not registered in mmengine MODELS'
    import importlib.util
    spec = importlib.util.spec_from_file_location('_get_flops', REPO / 'tools' / 'get_flops.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    res = tool.get_flops(Config.fromfile(str(path)))
    assert not [k for k in res['unsupported'] if 'SelectiveScan' in k or 'Mamba' in k]
    assert abs(res['params'] / params - 1) < 0.01, res['params']
    assert abs(res['flops'] / flops - 1) < 0.01, res['flops']


@pytest.mark.parametrize('config,shape', [('seg/demo/upernet_vim_t_toy_ade.py', (64, 96)),
                                          ('det/demo/mask_rcnn_vim_t_fpn_toy_coco.py', (96, 64))])
def test_get_flops_cli(config, shape, capsys):
    path = REPO / 'configs' / config
    assert path.is_file(), path
    _backbones()
    import importlib.util
    spec = importlib.util.spec_from_file_location('_get_flops', REPO / 'tools' / 'get_flops.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    params, flops = tool.main([str(path), '--shape', *map(str, shape),
                               '--cfg-options', 'model.backbone.drop_path_rate=0.0'])
    out = capsys.readouterr().out
    assert f'Input shape: (3, {shape[0]}, {shape[1]})' in out
    assert f'Params: {params / 1e6:.3f} M' in out and f'FLOPs: {flops / 1e9:.2f} G' in out
    counted_as_zero = [ln for ln in out.splitlines() if ln.startswith('Counted as 0')]
    assert not any('SelectiveScan' in ln for ln in counted_as_zero)
    assert params > 0 and flops > 0


def _scan_total(model, x):
    from mmengine.analysis import FlopAnalyzer
    with torch.no_grad():
        a = FlopAnalyzer(model.eval(), (x,)).set_op_handle(**flop_handles())
        a.unsupported_ops_warnings(False)
        a.uncalled_modules_warnings(False)
        ops = a.by_operator()
    return sum(v for k, v in ops.items() if k.startswith('PythonOp.SelectiveScan'))


def _vim_like_expected(depth, k, d_inner, n, tokens):
    """One scan call per block over ``k`` stacked directions, with the D skip and the z gate."""
    return depth * (9 * tokens * k * d_inner * n + 2 * tokens * k * d_inner)


def test_scan_flops_exact_vim():
    Vim = _backbones().Vim
    model = Vim(arch='tiny', embed_dim=32, depth=2, d_state=4, img_size=64, out_indices=(1,))
    # 64x64 input, patch 16: 16 patches + the middle cls token; d_inner = 2 * 32; 2 directions
    assert _scan_total(model, torch.randn(1, 3, 64, 64)) == _vim_like_expected(2, 2, 64, 4, 17)


def test_scan_flops_exact_arm():
    ARM = _backbones().ARM
    model = ARM(arch='base', embed_dim=32, depth=2, d_state=4, img_size=64, out_indices=(1,))
    # d_inner = 1 * 32; 4 directions (row, row_rev, col, col_rev)
    assert _scan_total(model, torch.randn(1, 3, 64, 64)) == _vim_like_expected(2, 4, 32, 4, 17)


def test_scan_flops_exact_vssm():
    VSSM = _backbones().VSSM
    model = VSSM(arch='tiny', depths=[1, 1, 1, 1], dims=16, out_indices=(3,))
    expected = 0
    for i in range(4):  # stage i: (16 / 2^i)^2 tokens, d_inner = dims_i (ssm_ratio 1), N = 1
        tokens, d_inner = (16 >> i) ** 2, 16 * 2 ** i
        expected += 9 * tokens * 4 * d_inner * 1 + tokens * 4 * d_inner  # 4 directions, D, no z
    assert _scan_total(model, torch.randn(1, 3, 64, 64)) == expected
