"""MambaLayerDecayOptimWrapperConstructor: lr scales, no-decay sets, coverage, config build."""
import importlib

import pytest
import torch
from torch import nn

pytest.importorskip('mmengine')

from mmengine.optim import build_optim_wrapper  # noqa: E402
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS  # noqa: E402

import mmvssm  # noqa: E402,F401  (registers the constructor)
from mmvssm.mm.layer_decay import MambaLayerDecayOptimWrapperConstructor  # noqa: E402

BASE_LR, BASE_WD, RATE = 1e-3, 0.05, 0.5


def backbone_cls(module: str, name: str):
    """The backbone class, or skip while its file (or the scan op it needs) is not written yet."""
    try:
        return getattr(importlib.import_module(f'mmvssm.backbones.{module}'), name)
    except ImportError as e:  # pragma: no cover - only while the package is being assembled
        pytest.skip(f'mmvssm.backbones.{module} not importable yet: {e}')


class FakeBackbone(nn.Module):
    """Exposes the backbone API the constructor relies on."""
    num_layers = 2

    def __init__(self):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, 8, 4, 4)
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
        self.layers = nn.ModuleList(nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 8))
                                    for _ in range(2))
        self.A_log = nn.Parameter(torch.zeros(8, 4))
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)

    def get_layer_id(self, name):
        if name.startswith(('patch_embed', 'pos_embed')):
            return 0
        if name.startswith('layers.'):
            return int(name.split('.')[1]) + 1
        return self.num_layers + 1


class Detector(nn.Module):
    """backbone + neck + head, named as in mmdet/mmseg models."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.neck = nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8))
        self.head = nn.Linear(8, 2)


def build(model, **paramwise):
    cfg = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=BASE_LR, weight_decay=BASE_WD),
               constructor='MambaLayerDecayOptimWrapperConstructor',
               paramwise_cfg=dict(layer_decay_rate=RATE, **paramwise))
    return build_optim_wrapper(model, cfg)


def by_name(optim_wrapper):
    """{param name: (lr, weight_decay, group)} and a coverage check."""
    out = {}
    for g in optim_wrapper.optimizer.param_groups:
        assert len(g['params']) == len(g['param_names'])
        for n, p in zip(g['param_names'], g['params']):
            assert n not in out, f'{n} in two groups'
            out[n] = (g['lr'], g['weight_decay'], g)
    return out


def check_coverage(model, table):
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(table) == trainable
    n_params = sum(len(g['params']) for g in {id(v[2]): v[2] for v in table.values()}.values())
    assert n_params == len(trainable)


def scale(layer_id, num_layers):
    return RATE ** (num_layers + 1 - layer_id)


def test_registered():
    assert OPTIM_WRAPPER_CONSTRUCTORS.get('MambaLayerDecayOptimWrapperConstructor') \
        is MambaLayerDecayOptimWrapperConstructor


def test_fake_backbone_groups():
    model = Detector(FakeBackbone())
    ow = build(model)
    t = by_name(ow)
    check_coverage(model, t)
    assert 'backbone.frozen.weight' not in t
    assert t['backbone.patch_embed.weight'][:2] == pytest.approx((BASE_LR * RATE ** 3, BASE_WD))
    assert t['backbone.pos_embed'][:2] == pytest.approx((BASE_LR * RATE ** 3, 0.))
    assert t['backbone.layers.0.1.weight'][:2] == pytest.approx((BASE_LR * RATE ** 2, BASE_WD))
    assert t['backbone.layers.1.0.weight'][:2] == pytest.approx((BASE_LR * RATE, 0.))  # LN
    assert t['backbone.layers.1.1.bias'][:2] == pytest.approx((BASE_LR * RATE, 0.))
    assert t['backbone.A_log'][:2] == pytest.approx((BASE_LR, 0.))
    assert t['neck.0.weight'][:2] == pytest.approx((BASE_LR, BASE_WD))
    assert t['neck.1.weight'][:2] == pytest.approx((BASE_LR, 0.))  # BN
    assert t['head.weight'][:2] == pytest.approx((BASE_LR, BASE_WD))
    assert t['head.bias'][:2] == pytest.approx((BASE_LR, 0.))
    g = t['backbone.patch_embed.weight'][2]
    assert g['group_name'] == 'layer_0_decay' and g['lr_scale'] == pytest.approx(RATE ** 3)


def test_num_layers_override_and_bare_backbone():
    bb = FakeBackbone()
    t = by_name(build(bb, num_layers=4))
    assert t['patch_embed.weight'][0] == pytest.approx(BASE_LR * RATE ** 5)
    assert t['layers.1.1.weight'][0] == pytest.approx(BASE_LR * RATE ** 3)


def test_errors():
    with pytest.raises(ValueError, match='layer_decay_rate'):
        build_optim_wrapper(FakeBackbone(), dict(
            optimizer=dict(type='AdamW', lr=1e-3),
            constructor='MambaLayerDecayOptimWrapperConstructor', paramwise_cfg=dict()))
    with pytest.raises(ValueError, match='unsupported paramwise_cfg'):
        build(FakeBackbone(), custom_keys={})
    with pytest.raises(ValueError, match='decay_type'):
        build(FakeBackbone(), decay_type='stage_wise')
    with pytest.raises(TypeError, match='get_layer_id'):
        build(Detector(nn.Conv2d(3, 8, 1)))


def no_decay_names(table):
    return {n for n, (_, wd, _) in table.items() if wd == 0.}


def test_mambaout():
    MambaOut = backbone_cls('mambaout', 'MambaOut')
    model = Detector(MambaOut(arch=dict(depths=[1, 1, 2, 1], dims=[8, 16, 24, 32])))
    t = by_name(build(model))
    check_coverage(model, t)
    n = 5
    assert t['backbone.stem.conv1.weight'][0] == pytest.approx(BASE_LR * scale(0, n))
    assert t['backbone.stages.0.blocks.0.fc1.weight'][:2] == pytest.approx(
        (BASE_LR * scale(1, n), BASE_WD))
    assert t['backbone.stages.2.downsample.conv.weight'][0] == pytest.approx(
        BASE_LR * scale(3, n))
    assert t['backbone.stages.2.blocks.1.conv.weight'][0] == pytest.approx(BASE_LR * scale(4, n))
    assert t['backbone.stages.3.blocks.0.fc2.weight'][0] == pytest.approx(BASE_LR * scale(5, n))
    assert t['backbone.out_norms.3.weight'][:2] == pytest.approx((BASE_LR, 0.))
    nd = no_decay_names(t)
    assert 'backbone.stages.0.blocks.0.norm.weight' in nd
    assert 'backbone.stem.norm1.weight' in nd
    assert all(n.endswith('.bias') or '.norm' in n or 'norms' in n for n in nd if 'neck' not in n)
    assert not any(n.endswith('.weight') and t[n][2]['params'][0].ndim > 1 for n in nd)


def _check_mamba_plain(model, n, norm='norm'):
    t = by_name(build(model))
    check_coverage(model, t)
    assert t['backbone.patch_embed.proj.weight'][:2] == pytest.approx(
        (BASE_LR * scale(0, n), BASE_WD))
    assert t['backbone.pos_embed'][:2] == pytest.approx((BASE_LR * scale(0, n), 0.))
    assert t['backbone.cls_token'][:2] == pytest.approx((BASE_LR * scale(0, n), 0.))
    assert t['backbone.layers.0.mixer.in_proj.weight'][:2] == pytest.approx(
        (BASE_LR * scale(1, n), BASE_WD))
    assert t['backbone.layers.1.mixer.A_b_log'][:2] == pytest.approx((BASE_LR * scale(2, n), 0.))
    assert t['backbone.layers.1.mixer.D_b'][:2] == pytest.approx((BASE_LR * scale(2, n), 0.))
    assert t['backbone.layers.0.mixer.A_log'][1] == 0.
    assert t['backbone.layers.0.mixer.D'][1] == 0.
    assert t[f'backbone.layers.0.{norm}.weight'][1] == 0.
    assert t['backbone.layers.0.mixer.x_proj.weight'][1] == BASE_WD
    assert t['neck.0.weight'][0] == pytest.approx(BASE_LR)
    return t


def test_vim():
    Vim = backbone_cls('vim', 'Vim')
    bb = Vim(arch='tiny', embed_dim=32, depth=4, d_state=4, img_size=64, out_indices=(3,))
    t = _check_mamba_plain(Detector(bb), 4)
    assert t['backbone.layers.3.mixer.out_proj.weight'][0] == pytest.approx(BASE_LR * RATE)


def test_arm():
    ARM = backbone_cls('arm', 'ARM')
    bb = ARM(arch='base', embed_dim=32, depth=2, d_state=4, img_size=64, out_indices=(1,))
    t = _check_mamba_plain(Detector(bb), 2, norm='norm1')
    assert t['backbone.layers.1.norm2.bias'][:2] == pytest.approx((BASE_LR * scale(2, 2), 0.))
    assert t['backbone.layers.1.mlp.w1.weight'][:2] == pytest.approx(
        (BASE_LR * scale(2, 2), BASE_WD))
    for s in ('c', 'c_b'):
        assert t[f'backbone.layers.0.mixer.A_{s}_log'][1] == 0.
        assert t[f'backbone.layers.0.mixer.D_{s}'][1] == 0.


def test_vssm():
    VSSM = backbone_cls('vssm', 'VSSM')
    bb = VSSM(arch='tiny', depths=[1, 1, 2, 1], dims=16)
    model = Detector(bb)
    t = by_name(build(model))
    check_coverage(model, t)
    n = bb.num_layers
    assert n == 5
    for name, (lr, wd, g) in t.items():
        if not name.startswith('backbone.'):
            continue
        lid = bb.get_layer_id(name[len('backbone.'):])
        assert lr == pytest.approx(BASE_LR * scale(lid, n)), name
    assert t['backbone.layers.2.blocks.1.op.A_logs'][1] == 0.
    assert t['backbone.layers.2.blocks.1.op.Ds'][1] == 0.
    assert t['backbone.layers.2.blocks.1.op.dt_projs_bias'][1] == 0.
    assert t['backbone.layers.2.blocks.1.op.x_proj_weight'][1] == BASE_WD
    assert t['backbone.layers.2.blocks.1.op.out_norm.weight'][1] == 0.
    assert t['backbone.layers.2.blocks.1.mlp.fc1.weight'][1] == BASE_WD
    # stage 2's first block sits after 1 + 1 blocks
    assert t['backbone.layers.2.blocks.0.mlp.fc1.weight'][0] == pytest.approx(
        BASE_LR * scale(3, n))
