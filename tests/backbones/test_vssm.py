"""VSSM (VMamba) backbone: official names/shapes, parity with the official code, counts, shapes, errors."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from fixtures_util import fixture_file, fixtures_dir
from mmvssm.backbones.vssm import VSSM
from mmvssm.layers.ss2d import SS2D
from mmvssm.utils.checkpoint import CheckpointMismatchError

#: fixture manifest -> our preset
FIXTURE_ARCH = {
    'vmamba_v2_tiny_s1l8': 'tiny', 'vmamba_v2_small_s2l15': 'small', 'vmamba_v2_base_s2l15': 'base',
    'vmamba_v2_tiny_s2l5': 'tiny_s2l5', 'vmamba_v2_small_s1l20': 'small_s1l20',
    'vmamba_v0_tiny': 'tiny_v0', 'vmamba_v0_small': 'small_v0', 'vmamba_v0_base': 'base_v0',
}
#: README / paper parameter counts (M, published to the unit) of the classification models
PUBLISHED_M = {'tiny': 30, 'small': 50, 'base': 89, 'tiny_s2l5': 31, 'small_s1l20': 49,
               'base_s1l20': 87, 'tiny_v0': 23, 'small_v0': 44, 'base_v0': 76}
#: small settings for the shape / backward tests: the two released layouts + the other pieces
SMALL = dict(depths=[1, 1, 1, 1], dims=8, d_state=2)
SMALL_ARCHS = {
    'v2': dict(SMALL, **{k: v for k, v in VSSM.arch_zoo['tiny'].items() if k not in SMALL}),
    'v0': dict(SMALL, **{k: v for k, v in VSSM.arch_zoo['tiny_v0'].items() if k not in SMALL}),
}
SMALL_ARCHS['v2_k2_patchify'] = dict(SMALL_ARCHS['v2'], stem='v1', downsample='v2')
SMALL_ARCHS['v0_channel_first'] = dict(SMALL_ARCHS['v0'], channel_first=True)


def meta_model(arch, **kw):
    with torch.device('meta'):
        return VSSM(arch, **kw)


def n_params(model):
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith('outnorm'))


def classifier_params(dim, num_classes=1000):
    return 2 * dim + dim * num_classes + num_classes  # classifier.norm + classifier.head


# ----- names and shapes -----------------------------------------------------------------------
@pytest.mark.parametrize('variant', sorted(FIXTURE_ARCH))
def test_official_keys_match_one_to_one(variant):
    path = fixtures_dir() / 'state_dict_keys' / f'{variant}.json'
    if not path.is_file():
        pytest.skip(f'{path} not available')
    ref = json.loads(path.read_text())
    arch = FIXTURE_ARCH[variant]
    assert VSSM.arch_from_official(ref['constructor_kwargs']) == VSSM.arch_zoo[arch] | {
        'dims': ref['constructor_kwargs']['dims'], 'dt_rank': 'auto', 'ssm_conv': 3, 'patch_size': 4}
    official = {k: torch.empty(s, device='meta') for k, s in ref['params'].items()}
    converted = VSSM.convert_official(official)
    model = meta_model(arch, out_norm=False)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    body = {k: tuple(v.shape) for k, v in converted.items() if not k.startswith('classifier.')}
    assert body == ours  # one-to-one names and shapes
    assert sorted(k for k in converted if k.startswith('classifier.')) == [
        'classifier.head.bias', 'classifier.head.weight', 'classifier.norm.bias', 'classifier.norm.weight']
    assert n_params(model) + classifier_params(model.dims[-1]) == ref['num_params']
    assert model.dims == ref['dims']
    assert model.channel_first == ref['channel_first']


def test_legacy_names_are_remapped():
    """Old v0 checkpoints (``patch_embed.proj``, ``ln_1``, ``self_attention``, ``norm``, ``head``)."""
    model = VSSM(SMALL_ARCHS['v0'])
    sd = model.state_dict()
    legacy = {}
    for k, v in sd.items():
        k = k.replace('patch_embed.0', 'patch_embed.proj').replace('patch_embed.2', 'patch_embed.norm')
        k = k.replace('.blocks.0.norm.', '.blocks.0.ln_1.').replace('.op.', '.self_attention.')
        legacy[k] = v
    legacy['norm.weight'] = torch.ones(64)
    legacy['head.weight'] = torch.zeros(10, 64)
    assert any('ln_1' in k for k in legacy) and any('self_attention' in k for k in legacy)
    converted = VSSM.convert_official(legacy)
    assert set(converted) == set(sd) | {'classifier.norm.weight', 'classifier.head.weight'}
    report = VSSM(SMALL_ARCHS['v0']).load_official(legacy)
    assert sorted(report['unexpected']) == ['classifier.head.weight', 'classifier.norm.weight']


@pytest.mark.parametrize('arch', sorted(PUBLISHED_M))
def test_param_counts_match_published(arch):
    model = meta_model(arch)
    total = n_params(model) + classifier_params(model.dims[-1])
    assert round(total / 1e6) == PUBLISHED_M[arch]


def test_base_s1l20_from_anchors():
    """Not in the fixtures: vmambav2v_base_224.yaml = base widths, ssm_ratio 1, 2-2-20-2, dp 0.5."""
    model = meta_model('base_s1l20')
    assert model.depths == [2, 2, 20, 2] and model.dims == [128, 256, 512, 1024]
    op = model.layers[2].blocks[0].op
    assert (op.d_inner, op.d_state, op.dt_rank, op.gate) == (512, 1, 32, False)
    assert tuple(op.x_proj_weight.shape) == (4, 32 + 2, 512)
    assert model.arch_settings['drop_path_rate'] == 0.5
    assert model.patch_embed[0].out_channels == 64 and model.layers[0].downsample[1].kernel_size == (3, 3)


# ----- parity with the official implementation ------------------------------------------------
@pytest.mark.parametrize('fixture', ['vmamba_v2_s2.pt', 'vmamba_v0.pt'])
def test_parity_with_official(fixture):
    data = torch.load(fixture_file('parity', fixture), weights_only=True)
    model = VSSM(VSSM.arch_from_official(data['constructor_kwargs'])).eval()
    sd = dict(data['state_dict'], **data['backbone']['extra_state_dict'])
    report = model.load_official(sd)
    assert report['missing'] == [] and all(k.startswith('classifier.') for k in report['unexpected'])
    cf = model.channel_first

    feats = {}
    hooks = [model.patch_embed.register_forward_hook(lambda m, i, o: feats.__setitem__('patch_embed', o)),
             model.layers[0].blocks[0].op.register_forward_hook(
                 lambda m, i, o: feats.__setitem__('layers.0.blocks.0.op.output', o))]
    for s, layer in enumerate(model.layers):
        hooks.append(layer.blocks[-1].register_forward_hook(
            lambda m, i, o, s=s: feats.__setitem__(f'stage{s}', o)))

    def logits(x):  # the official classifier on our last stage (NHWC)
        x = F.layer_norm(x, (x.shape[-1],), sd['classifier.norm.weight'], sd['classifier.norm.bias'])
        return F.linear(x.mean((1, 2)), sd['classifier.head.weight'], sd['classifier.head.bias'])

    cases = [('', data['input'], data['features'], data['output'], data['backbone']['outputs'])]
    for n in ('nonsquare', 'odd'):
        cases.append((n, data['extra_inputs'][n], data['extra_features'][n], data['extra_outputs'][n],
                      data['backbone'][f'outputs_{n}']))
    worst = 0.
    with torch.no_grad():
        for name, x, ref_feats, ref_logits, ref_outs in cases:
            feats.clear()
            outs = model(x)
            for k, ref in ref_feats.items():
                if k in feats:
                    assert feats[k].shape == ref.shape, k
                    worst = max(worst, (feats[k] - ref).abs().max().item())
            for o, ref in zip(outs, ref_outs, strict=True):
                assert o.shape == ref.shape
                worst = max(worst, (o - ref).abs().max().item())
            stage3 = feats['stage3'].permute(0, 2, 3, 1) if cf else feats['stage3']
            worst = max(worst, (logits(stage3) - ref_logits).abs().max().item())
    for h in hooks:
        h.remove()
    print(f'{fixture} max abs diff {worst:.3g}')
    assert worst <= 1e-4


# ----- shapes, backward, activation checkpointing ---------------------------------------------
@pytest.mark.parametrize('hw', [(64, 64), (200, 320), (97, 131)])
@pytest.mark.parametrize('kind', sorted(SMALL_ARCHS))
def test_pyramid_shapes_and_backward(kind, hw):
    torch.manual_seed(0)
    model = VSSM(SMALL_ARCHS[kind], drop_path_rate=0.1)
    x = torch.randn(1, 3, *hw, requires_grad=True)
    outs = model(x)
    assert len(outs) == 4
    for i, o in enumerate(outs):
        s = 2 ** (i + 2)
        assert o.shape == (1, 8 * 2 ** i, math.ceil(hw[0] / s), math.ceil(hw[1] / s))
        assert o.is_contiguous()
    sum(o.mean() for o in outs).backward()
    assert torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in model.parameters())


def test_with_cp_matches_plain():
    torch.manual_seed(0)
    model = VSSM(SMALL_ARCHS['v2'], drop_path_rate=0.).train()
    x = torch.randn(2, 3, 32, 40)
    grads = []
    for cp_on in (False, True):
        model.set_grad_checkpointing(cp_on)
        model.zero_grad()
        sum(o.sum() for o in model(x)).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    assert VSSM(SMALL_ARCHS['v2'], with_cp=True).grad_checkpointing


def test_out_indices_and_drop_path_schedule():
    model = VSSM(SMALL_ARCHS['v2'], out_indices=(2, 0), drop_path_rate=0.3)
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [8, 32]
    assert {k.split('.')[0] for k in model.state_dict() if k.startswith('outnorm')} == {'outnorm0', 'outnorm2'}
    blocks = [b for layer in model.layers for b in layer.blocks]
    assert isinstance(blocks[0].drop_path, torch.nn.Identity)
    assert blocks[-1].drop_path.drop_prob == pytest.approx(0.3)


def test_one_grouped_scan_call_per_block(monkeypatch):
    import mmvssm.layers.ss2d as ss2d_mod
    calls = []
    real = ss2d_mod.selective_scan

    def counting(u, delta, A, B, C, *args, **kwargs):
        calls.append((tuple(u.shape), tuple(B.shape), tuple(C.shape)))
        return real(u, delta, A, B, C, *args, **kwargs)

    monkeypatch.setattr(ss2d_mod, 'selective_scan', counting)
    model = VSSM(SMALL_ARCHS['v2'])
    with torch.no_grad():
        model(torch.randn(2, 3, 24, 40))
    assert len(calls) == sum(model.depths)
    u, b, c = calls[0]  # stage 0: 6 x 10 tokens, d_inner = 8 (ssm_ratio 1), d_state 2
    assert u == (2, 4 * 8, 60) and b == c == (2, 4, 2, 60)


def test_official_init():
    torch.manual_seed(0)
    model = VSSM(dict(SMALL_ARCHS['v0'], d_state=4))
    model.init_weights()
    op = model.layers[1].blocks[0].op
    assert isinstance(op, SS2D)
    torch.testing.assert_close(op.A_logs.exp(), torch.arange(1., 5.).expand(4 * op.d_inner, 4))
    assert (op.Ds == 1).all()
    dt = F.softplus(op.dt_projs_bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
    assert op.dt_projs_weight.abs().max() <= op.dt_rank ** -0.5
    assert op.in_proj.weight.std() < 0.03 and (model.outnorm0.weight == 1).all()


def test_layer_ids():
    model = meta_model('tiny')
    L = model.num_layers
    assert L == 14
    ids = {n: model.get_layer_id(n) for n, _ in model.named_parameters()}
    assert ids['patch_embed.0.weight'] == 0
    assert ids['layers.0.blocks.0.op.A_logs'] == 1
    assert ids['layers.0.downsample.1.weight'] == 3 == ids['layers.1.blocks.0.norm.weight']
    assert ids['layers.3.blocks.1.mlp.fc2.bias'] == L
    assert ids['outnorm3.weight'] == L + 1
    assert set(ids.values()) == set(range(L + 2))


# ----- errors -------------------------------------------------------------------------------
def test_bad_inputs():
    model = VSSM(SMALL_ARCHS['v2'])
    with pytest.raises(ValueError, match='3 input channels, got 4'):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        model(torch.randn(3, 32))
    # thinner than one patch: padded (an extreme aspect ratio after mmseg's test Resize)
    assert [o.shape[-2:] for o in model(torch.randn(1, 3, 32, 2))] == [
        (8, 1), (4, 1), (2, 1), (1, 1)]
    with pytest.raises(ValueError, match='empty image'):
        model(torch.randn(1, 3, 32, 0))
    with pytest.raises(ValueError, match='empty batch'):
        model(torch.randn(0, 3, 32, 32))
    with pytest.raises(ValueError, match='d_conv .* must be odd'):
        VSSM(dict(SMALL_ARCHS['v2'], ssm_conv=2))
    with pytest.raises(KeyError, match='unknown arch'):
        VSSM('huge')
    with pytest.raises(ValueError, match='forward_type'):
        VSSM.arch_from_official(dict(depths=[1], dims=8, forward_type='v3'))
    with pytest.raises(ValueError, match='unknown'):
        VSSM(dict(SMALL_ARCHS['v2'], window_size=7))


def test_wrong_checkpoint_family_and_size():
    model = VSSM(SMALL_ARCHS['v2'])
    mambaout_like = {'downsample_layers.0.conv1.weight': torch.zeros(4, 3, 3, 3),
                     'stages.0.0.fc1.weight': torch.zeros(16, 8)}
    with pytest.raises(CheckpointMismatchError, match='not a VMamba'):
        model.load_official(mambaout_like)
    with pytest.raises(CheckpointMismatchError, match='shape mismatch'):
        model.load_official(VSSM(dict(SMALL_ARCHS['v2'], dims=16)).state_dict())
    with pytest.raises(CheckpointMismatchError, match='missing in checkpoint'):
        model.load_official(VSSM(SMALL_ARCHS['v0']).state_dict())  # v0 into v2
    # Linear2d weights saved as 1x1 convs load too
    sd = {k: (v[:, :, None, None] if k.endswith(('in_proj.weight', 'out_proj.weight')) else v)
          for k, v in VSSM(SMALL_ARCHS['v2']).state_dict().items()}
    model.load_official(sd)
