"""MambaOut backbone: official names/shapes, parity with the official code, counts, shapes, errors."""
import json

import pytest
import torch
import torch.nn.functional as F

from fixtures_util import fixture_file, fixtures_dir
from mmvssm.backbones.mambaout import MambaOut
from mmvssm.utils.checkpoint import CheckpointMismatchError

TINY = dict(depths=[1, 1, 2, 1], dims=[8, 16, 24, 32])  # small override for shape/backward tests
VARIANTS = ['femto', 'tiny', 'small', 'base']  # in the fixtures; kobe is covered by counts only
PUBLISHED_M = {'femto': 7.3, 'kobe': 9.1, 'tiny': 26.5, 'small': 48.5, 'base': 84.8}


def meta_model(arch, **kw):
    with torch.device('meta'):
        return MambaOut(arch, **kw)


def head_params(dim, num_classes=1000):
    """Official classifier: post-pool LN(C) + MlpHead(fc1 C->4C, LN(4C), fc2 4C->classes)."""
    return 2 * dim + (dim * 4 * dim + 4 * dim) + 2 * 4 * dim + (4 * dim * num_classes + num_classes)


def n_params(model, skip=('out_norms.',)):
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith(skip))


# ----- names and shapes -----------------------------------------------------------------------
@pytest.mark.parametrize('arch', VARIANTS)
def test_official_keys_match_one_to_one(arch):
    path = fixtures_dir() / 'state_dict_keys' / f'mambaout_{arch}.json'
    if not path.is_file():
        pytest.skip(f'{path} not available')
    ref = json.loads(path.read_text())
    official = {k: torch.empty(s, device='meta') for k, s in ref['params'].items()}
    converted = MambaOut.convert_official(official)
    ours = {k: tuple(v.shape) for k, v in meta_model(arch, out_norm=False).state_dict().items()}
    body = {k: tuple(v.shape) for k, v in converted.items() if not k.startswith('head.')}
    assert body == ours  # one-to-one names and shapes
    assert sorted(k for k in converted if k.startswith('head.')) == sorted(
        ['head.norm.weight', 'head.norm.bias', 'head.pre_logits.fc.weight', 'head.pre_logits.fc.bias',
         'head.pre_logits.norm.weight', 'head.pre_logits.norm.bias', 'head.fc.weight', 'head.fc.bias'])
    model = meta_model(arch)
    assert n_params(model) + head_params(model.dims[-1]) == ref['num_params']
    # timm names pass unchanged
    assert MambaOut.convert_official(converted) == converted


@pytest.mark.parametrize('arch', sorted(PUBLISHED_M))
def test_param_counts_match_published(arch):
    model = meta_model(arch)
    total = n_params(model) + head_params(model.dims[-1])
    assert round(total / 1e6, 1) == PUBLISHED_M[arch]


def test_kobe_from_anchors():
    """kobe (README only): femto's widths, 3-3-15-3 blocks (24 Gated CNN blocks), 9.1M params."""
    model = meta_model('kobe')
    assert model.depths == [3, 3, 15, 3] and model.dims == [48, 96, 192, 288]
    assert model.num_layers == 24
    femto = meta_model('femto')
    per_block = n_params(model.stages[2].blocks[0])
    assert n_params(model) - n_params(femto) == 6 * per_block


# ----- parity with the official implementation ------------------------------------------------
def test_parity_with_official():
    data = torch.load(fixture_file('parity', 'mambaout_small_dims.pt'), weights_only=True)
    kw = data['constructor_kwargs']
    model = MambaOut(dict(depths=kw['depths'], dims=kw['dims']), out_norm=False,
                     drop_path_rate=kw['drop_path_rate']).eval()
    report = model.load_official(data['state_dict'])
    assert report['missing'] == [] and all(k.startswith('head.') for k in report['unexpected'])
    sd = MambaOut.convert_official(data['state_dict'])

    def logits(last):  # the official classifier on our last stage (NCHW)
        x = F.layer_norm(last.mean((2, 3)), (last.shape[1],), sd['head.norm.weight'], sd['head.norm.bias'], 1e-6)
        x = F.gelu(F.linear(x, sd['head.pre_logits.fc.weight'], sd['head.pre_logits.fc.bias']))
        x = F.layer_norm(x, (x.shape[1],), sd['head.pre_logits.norm.weight'], sd['head.pre_logits.norm.bias'], 1e-6)
        return F.linear(x, sd['head.fc.weight'], sd['head.fc.bias'])

    cases = [(data['input'], data['features'], data['output'])] + [
        (data['extra_inputs'][n], data['extra_features'][n], data['extra_outputs'][n])
        for n in ('nonsquare', 'odd')]
    worst = 0.
    with torch.no_grad():
        for x, feats, out in cases:
            outs = model(x)
            for i, o in enumerate(outs):
                ref = feats[f'stage{i}'].permute(0, 3, 1, 2)
                assert o.shape == ref.shape
                worst = max(worst, (o - ref).abs().max().item())
            worst = max(worst, (logits(outs[-1]) - out).abs().max().item())
    print(f'mambaout_small_dims max abs diff {worst:.3g}')
    assert worst <= 1e-4


def test_out_norms_are_layernorm_of_stage_outputs():
    torch.manual_seed(0)
    plain = MambaOut(TINY, out_norm=False).eval()
    normed = MambaOut(TINY).eval()
    normed.load_state_dict(plain.state_dict(), strict=False)
    for n in normed.out_norms:
        torch.nn.init.normal_(n.weight)
        torch.nn.init.normal_(n.bias)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for i, (a, b) in enumerate(zip(plain(x), normed(x))):
            ln = normed.out_norms[i]
            ref = F.layer_norm(a.permute(0, 2, 3, 1), (a.shape[1],), ln.weight, ln.bias, 1e-6)
            torch.testing.assert_close(b, ref.permute(0, 3, 1, 2))


# ----- shapes, backward, activation checkpointing ---------------------------------------------
@pytest.mark.parametrize('hw', [(64, 64), (200, 320), (97, 131)])
def test_pyramid_shapes_and_backward(hw):
    torch.manual_seed(0)
    model = MambaOut(TINY, drop_path_rate=0.1)
    x = torch.randn(1, 3, *hw, requires_grad=True)
    outs = model(x)
    assert len(outs) == 4
    for i, o in enumerate(outs):
        s = 2 ** (i + 2)
        assert o.shape == (1, TINY['dims'][i], -(-hw[0] // s), -(-hw[1] // s))
        assert o.is_contiguous()
    sum(o.float().mean() for o in outs).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in model.parameters())


def test_with_cp_matches_plain():
    torch.manual_seed(0)
    model = MambaOut(TINY).train()
    x = torch.randn(2, 3, 32, 48)
    grads = []
    for cp_on in (False, True):
        model.set_grad_checkpointing(cp_on)
        model.zero_grad()
        sum(o.sum() for o in model(x)).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    assert MambaOut(TINY, with_cp=True).grad_checkpointing


def test_out_indices_and_drop_path_schedule():
    model = MambaOut(TINY, out_indices=(1, 3), drop_path_rate=0.3)
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [16, 32]
    assert isinstance(model.out_norms[0], torch.nn.Identity)
    assert 'out_norms.1.weight' in model.state_dict() and 'out_norms.0.weight' not in model.state_dict()
    blocks = [b for s in model.stages for b in s.blocks]
    assert isinstance(blocks[0].drop_path, torch.nn.Identity)  # linspace(0, rate) starts at 0
    assert blocks[-1].drop_path.drop_prob == pytest.approx(0.3)
    assert len(MambaOut(TINY, out_indices=(0,))(torch.randn(1, 3, 32, 32))) == 1


def test_layer_ids():
    model = meta_model('tiny')
    L = model.num_layers
    assert L == 18
    ids = {n: model.get_layer_id(n) for n, _ in model.named_parameters()}
    assert ids['stem.conv1.weight'] == 0
    assert ids['stages.0.blocks.0.fc1.weight'] == 1
    assert ids['stages.1.downsample.conv.weight'] == 4 == ids['stages.1.blocks.0.norm.weight']
    assert ids['stages.3.blocks.2.fc2.bias'] == L
    assert ids['out_norms.3.weight'] == L + 1
    assert set(ids.values()) == set(range(L + 2))


# ----- errors -------------------------------------------------------------------------------
def test_bad_inputs():
    model = MambaOut(TINY)
    with pytest.raises(ValueError, match='3 input channels, got 1'):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        model(torch.randn(3, 32))
    # thinner than the stem's stride: padded (an extreme aspect ratio after mmseg's test Resize)
    assert [o.shape[-2:] for o in model(torch.randn(1, 3, 3, 32))] == [
        (1, 8), (1, 4), (1, 2), (1, 1)]
    with pytest.raises(KeyError, match='unknown arch'):
        MambaOut('huge')
    with pytest.raises(ValueError, match='out_indices'):
        MambaOut(TINY, out_indices=(4,))
    with pytest.raises(ValueError, match='kernel_size must be odd'):  # else a cat error later
        MambaOut(TINY, kernel_size=6)


def test_wrong_checkpoint_family_and_size():
    model = MambaOut(TINY)
    vmamba_like = {'patch_embed.0.weight': torch.zeros(8, 3, 4, 4),
                   'layers.0.blocks.0.op.A_logs': torch.zeros(16, 1)}
    with pytest.raises(CheckpointMismatchError, match='not a MambaOut checkpoint'):
        model.load_official(vmamba_like)
    other = MambaOut(dict(depths=[1, 1, 2, 1], dims=[8, 16, 24, 40])).state_dict()
    with pytest.raises(CheckpointMismatchError, match='shape mismatch'):
        model.load_official(other)
    deeper = MambaOut(dict(depths=[1, 1, 3, 1], dims=TINY['dims'])).state_dict()
    with pytest.raises(CheckpointMismatchError, match='unexpected in checkpoint'):
        model.load_official(deeper)
    # an mmvssm (timm-named) state dict, e.g. from a det checkpoint's backbone, loads strictly
    model.load_official({'backbone.' + k: v for k, v in MambaOut(TINY).state_dict().items()})


def test_init_cfg_pretrained_loads_official_flat_file(tmp_path):
    """An official-style flat file (``downsample_layers``/``stages.s.b``/``norm``/``head``) via init_cfg."""
    src = MambaOut(TINY, out_norm=False)
    official = {}
    for k, v in src.state_dict().items():
        k = k.replace('stem.', 'downsample_layers.0.')
        parts = k.split('.')
        if parts[0] == 'stages' and parts[2] == 'downsample':
            k = '.'.join(['downsample_layers', parts[1]] + parts[3:])
        elif parts[0] == 'stages':
            k = '.'.join(['stages', parts[1]] + parts[3:])
        official[k] = v
    official.update({'norm.weight': torch.ones(32), 'head.fc2.weight': torch.zeros(10, 128)})
    path = tmp_path / 'mambaout_official.pth'
    torch.save(official, path)
    model = MambaOut(TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    for k, v in src.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v)
    assert (model.out_norms[0].weight == 1).all()
