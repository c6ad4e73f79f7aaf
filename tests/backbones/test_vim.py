"""Vim backbone: official names/shapes, parity with the official code, counts, shapes, errors."""
import json

import pytest
import torch
import torch.nn.functional as F

from fixtures_util import fixture_file, fixtures_dir
from mmvssm.adapters import DeconvPyramid, SimpleFeaturePyramid
from mmvssm.backbones.vim import Vim
from mmvssm.utils.checkpoint import CheckpointMismatchError

SMALL = dict(embed_dim=32, depth=2, d_state=8)  # small override for shape/backward tests
VARIANTS = {  # fixture JSON -> our arch (vim_base is kept back from the fixtures: counts only)
    'vim_tiny_patch16_224': 'tiny', 'vim_small_patch16_224': 'small',
    'vim_tiny_patch16_stride8_224': 'tiny_s8', 'vim_small_patch16_stride8_224': 'small_s8'}
PUBLISHED_M = {'tiny': 7.15, 'small': 25.8, 'base': 97.6}  # anchors §1.3, with the 1000-class head


def meta_model(arch, **kw):
    with torch.device('meta'):
        return Vim(arch, **kw)


def with_head(model, num_classes=1000):
    return sum(p.numel() for p in model.parameters()) + model.embed_dim * num_classes + num_classes


def from_official_kwargs(kw, **extra):
    """Our Vim for an official ``VisionMamba(**kw)`` (the released v2 / middle-cls settings)."""
    assert kw['bimamba_type'] == 'v2' and kw['if_divide_out'] and kw['use_middle_cls_token']
    assert kw['rms_norm'] and kw['residual_in_fp32'] and kw['if_cls_token'] and not kw['if_rope']
    arch = dict(embed_dim=kw['embed_dim'], depth=kw['depth'], patch_size=kw['patch_size'],
                stride=kw['stride'], d_state=kw.get('d_state', 16), expand=2,
                img_size=kw['img_size'])
    return Vim(arch, drop_path_rate=kw['drop_path_rate'], **extra)


# ----- names and shapes -----------------------------------------------------------------------
@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_official_keys_match_one_to_one(variant):
    path = fixtures_dir() / 'state_dict_keys' / f'{variant}.json'
    if not path.is_file():
        pytest.skip(f'{path} not available')
    ref = json.loads(path.read_text())
    official = {k: torch.empty(s, device='meta') for k, s in ref['params'].items()}
    converted = Vim.convert_official(official)
    model = meta_model(VARIANTS[variant])
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    body = {k: tuple(v.shape) for k, v in converted.items() if not k.startswith('head.')}
    assert body == ours  # one-to-one names and shapes; conversion only drops head.*
    assert sorted(set(converted) - set(ours)) == ['head.bias', 'head.weight']
    assert ref['buffers'] == {} and dict(model.named_buffers()) == {}
    assert with_head(model) == ref['num_params']
    assert model.pretrain_grid == tuple(ref['grid_size'])
    assert model.layers[0].mixer.dt_rank == ref['dt_rank']
    assert model.layers[0].mixer.d_inner == ref['d_inner']


@pytest.mark.parametrize('arch', sorted(PUBLISHED_M))
def test_param_counts_match_published(arch):
    total = with_head(meta_model(arch))
    digits = 2 if arch == 'tiny' else 1
    assert round(total / 1e6, digits) == PUBLISHED_M[arch]


def test_base_from_anchors():
    """Vim-B (kept back from the fixtures): D 768, 24 blocks, d_inner 1536, dt_rank 48."""
    model = meta_model('base')
    assert (model.embed_dim, model.depth, model.stride) == (768, 24, 16)
    mixer = model.layers[0].mixer
    assert (mixer.d_inner, mixer.dt_rank, mixer.d_state) == (1536, 48, 16)
    assert model.pos_embed.shape == (1, 197, 768)
    assert with_head(model) == 97_598_440


# ----- parity with the official implementation ------------------------------------------------
@pytest.mark.parametrize('name', ['vim_tiny64.pt', 'vim_stride8.pt'])
def test_parity_with_official(name):
    data = torch.load(fixture_file('parity', name), weights_only=True)
    kw, feats, sd = data['constructor_kwargs'], data['features'], data['state_dict']
    model = from_official_kwargs(kw, out_indices=range(kw['depth'])).eval()
    report = model.load_official(sd)  # strict: only head.* may be left over
    assert report['missing'] == [] and sorted(report['unexpected']) == ['head.bias', 'head.weight']
    seen = {}
    hook = model.layers[0].mixer.register_forward_hook(
        lambda m, args, out: seen.update(input=args[0], output=out))
    with torch.no_grad():
        cls = model.forward_cls(data['input'])
        outs, *_ = model.forward_layers(data['input'], dense=False)
    hook.remove()
    diffs = {'cls_feature_after_norm_f': (cls - feats['cls_feature_after_norm_f']).abs().max(),
             'logits': (F.linear(cls, sd['head.weight'], sd['head.bias']) - data['output']).abs().max(),
             'layer0.mixer.input': (seen['input'] - feats['layer0.mixer.input']).abs().max(),
             'layer0.mixer.output': (seen['output'] - feats['layer0.mixer.output']).abs().max()}
    for i, (hidden, residual) in outs.items():
        diffs[f'layer{i}.hidden_states'] = (hidden - feats[f'layer{i}.hidden_states']).abs().max()
        diffs[f'layer{i}.residual'] = (residual - feats[f'layer{i}.residual']).abs().max()
    if kw['stride'] == kw['patch_size']:  # the dense geometry equals the official one here
        with torch.no_grad():
            maps = model(data['input'])
        g = data['meta']['grid_size']
        c = data['meta']['cls_token_index']
        for i, m in enumerate(maps):
            ref = feats[f'layer{i}.hidden_states'] + feats[f'layer{i}.residual']
            ref = torch.cat([ref[:, :c], ref[:, c + 1:]], 1).transpose(1, 2).reshape(m.shape)
            assert m.shape[-2:] == tuple(g)
            diffs[f'dense{i}'] = (m - ref).abs().max()
    worst = max(float(v) for v in diffs.values())
    print(f'{name}: max abs diff {worst:.3g}')
    assert worst <= 1e-4, {k: float(v) for k, v in diffs.items()}


def test_load_resizes_pos_embed_keeping_middle_cls():
    """A 7x7 (stride-8 @ 64) checkpoint into a 4x4-grid model: cls position kept, grid resized."""
    data = torch.load(fixture_file('parity', 'vim_stride8.pt'), weights_only=True)
    model = Vim(dict(embed_dim=64, depth=4, patch_size=16, stride=16, d_state=16, expand=2,
                     img_size=64))
    model.load_official(data['state_dict'])
    old = data['state_dict']['pos_embed']
    assert model.pos_embed.shape == (1, 17, 64)
    torch.testing.assert_close(model.pos_embed[:, 8], old[:, 24])  # cls at M//2 on both sides
    grid = torch.cat([old[:, :24], old[:, 25:]], 1).reshape(1, 7, 7, 64).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, size=(4, 4), mode='bicubic', align_corners=False)
    ref = ref.permute(0, 2, 3, 1).reshape(1, 16, 64)
    ours = torch.cat([model.pos_embed[:, :8], model.pos_embed[:, 9:]], 1)
    torch.testing.assert_close(ours, ref)


def test_pretrained_init_cfg(tmp_path):
    data = torch.load(fixture_file('parity', 'vim_tiny64.pt'), weights_only=True)
    path = tmp_path / 'vim.pth'
    torch.save({'model': data['state_dict'], 'epoch': 3}, path)
    model = from_official_kwargs(data['constructor_kwargs'],
                                 init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    torch.testing.assert_close(model.pos_embed, data['state_dict']['pos_embed'])
    with torch.no_grad():
        cls = model.eval().forward_cls(data['input'])
    torch.testing.assert_close(cls, data['features']['cls_feature_after_norm_f'],
                               rtol=1e-4, atol=1e-5)


# ----- dense forward: shapes, backward, options -----------------------------------------------
@pytest.mark.parametrize('hw', [(64, 64), (200, 320), (97, 131)])
def test_backbone_and_adapter_shapes_and_backward(hw):
    torch.manual_seed(0)
    model = Vim('tiny', **SMALL, drop_path_rate=0.1)
    neck = SimpleFeaturePyramid(32, out_channels=16)
    x = torch.randn(1, 3, *hw, requires_grad=True)
    maps = model(x)
    g = (-(-hw[0] // 16), -(-hw[1] // 16))
    assert len(maps) == 2 and all(m.shape == (1, 32, *g) and m.is_contiguous() for m in maps)
    outs = neck(maps)
    assert len(outs) == 4
    for s, o in zip((4, 8, 16, 32), outs):
        assert o.shape == (1, 16, -(-g[0] * 16 // s), -(-g[1] * 16 // s))
    sum(o.mean() for o in outs).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, n


def test_stride8_with_deconv_pyramid():
    model = Vim('tiny_s8', **SMALL, out_indices=(0, 1, 1, 1))
    neck = DeconvPyramid(32, in_stride=8, norm_cfg=dict(type='GN', num_groups=4))
    maps = model(torch.randn(1, 3, 72, 40))
    assert all(m.shape == (1, 32, 9, 5) for m in maps)  # ceil(H/8): centred stride-8 grid
    outs = neck(maps)
    assert [o.shape[-2:] for o in outs] == [(18, 10), (9, 5), (5, 3), (3, 2)]


def test_feature_source_final_norm_and_cls_options():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 48, 64)
    res = Vim('tiny', **SMALL, out_indices=(0, 1)).eval()
    hid = Vim('tiny', **SMALL, out_indices=(0, 1), feature_source='hidden').eval()
    normed = Vim('tiny', **SMALL, out_indices=(1,), final_norm=True).eval()
    hid.load_state_dict(res.state_dict())
    normed.load_state_dict(res.state_dict())
    with torch.no_grad():
        outs, *_ = res.forward_layers(x, dense=True)
        r, h, n = res(x), hid(x), normed(x)
    c = 3 * 4 // 2
    for i in (0, 1):
        tok_h, tok_r = outs[i]
        drop = lambda t: torch.cat([t[:, :c], t[:, c + 1:]], 1)  # noqa: E731
        torch.testing.assert_close(h[i].flatten(2).transpose(1, 2), drop(tok_h))
        torch.testing.assert_close(r[i].flatten(2).transpose(1, 2), drop(tok_r + tok_h))
    torch.testing.assert_close(n[0].permute(0, 2, 3, 1), res.norm_f(r[1].permute(0, 2, 3, 1)))
    assert not res.norm_f.weight.requires_grad and normed.norm_f.weight.requires_grad
    nocls = Vim('tiny', **SMALL, use_cls_token=False).eval()
    assert nocls(x)[0].shape == (1, 32, 3, 4) and not nocls.cls_token.requires_grad
    with pytest.raises(ValueError, match='feature_source'):
        Vim('tiny', **SMALL, feature_source='both')


def test_residual_features_in_training_are_the_official_stream():
    """With drop path (training), the official segmentation code reads the stream after block i
    from block i + 1's residual output, i.e. with block i + 1's drop path applied to hidden_i;
    the last block's map is hidden + residual (last_layer_process='add')."""
    model = Vim('tiny', embed_dim=32, depth=4, d_state=8, out_indices=(0, 1, 3),
                drop_path_rate=0.9).train()
    x = torch.randn(2, 3, 32, 48)
    torch.manual_seed(1)
    maps = model(x)
    torch.manual_seed(1)
    outs, *_ = model.forward_layers(x, dense=True)
    c = 2 * 3 // 2
    tokens = [m.flatten(2).transpose(1, 2) for m in maps]
    drop = lambda t: torch.cat([t[:, :c], t[:, c + 1:]], 1)  # noqa: E731
    torch.testing.assert_close(tokens[0], drop(outs[1][1]), rtol=0, atol=0)
    torch.testing.assert_close(tokens[1], drop(outs[2][1]), rtol=0, atol=0)
    torch.testing.assert_close(tokens[2], drop(outs[3][0] + outs[3][1]), rtol=0, atol=0)
    assert not torch.equal(tokens[1], drop(outs[1][0] + outs[1][1]))  # block 2's drop path acted
    # the last map read (block 1 of out_indices=(1,)) gets block 2's drop path without block 2
    short = Vim('tiny', embed_dim=32, depth=4, d_state=8, out_indices=(1,), drop_path_rate=0.9)
    short.load_state_dict(model.state_dict())
    torch.manual_seed(1)
    (one,) = short.train()(x)
    torch.testing.assert_close(one.flatten(2).transpose(1, 2), tokens[1], rtol=0, atol=0)


def test_out_indices_freeze_unused_blocks_and_drop_path_schedule():
    model = Vim('tiny', embed_dim=32, depth=4, d_state=8, out_indices=(1,), drop_path_rate=0.3)
    assert model.out_indices == (1,)
    assert not any(p.requires_grad for p in model.layers[2:].parameters())
    assert all(p.requires_grad for p in model.layers[:2].parameters())
    assert isinstance(model.layers[0].drop_path, torch.nn.Identity)  # [0] + linspace(0, r, depth)
    probs = [getattr(b.drop_path, 'drop_prob', 0.) for b in model.layers] + [model.drop_path.drop_prob]
    assert probs == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.3])
    assert Vim('tiny', **SMALL).out_indices == (0, 1)
    assert meta_model('tiny').out_indices == (5, 11, 17, 23)


def test_online_pos_embed_resize_non_square():
    """The stored 4x4 grid (cls at 8 excluded) resized bicubically to the actual 3x5 grid."""
    torch.manual_seed(0)
    model = Vim('tiny', **SMALL, img_size=64).eval()
    pe = model.pos_embed.detach()
    cls_pos, grid_pos = model._grid_pos_embed((3, 5))
    torch.testing.assert_close(cls_pos, pe[:, 8:9])
    grid = torch.cat([pe[:, :8], pe[:, 9:]], 1).reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, size=(3, 5), mode='bicubic', align_corners=False)
    torch.testing.assert_close(grid_pos, ref.permute(0, 2, 3, 1).reshape(1, 15, 32))
    same = model._grid_pos_embed((4, 4))[1]  # the stored grid: no resampling
    torch.testing.assert_close(same, torch.cat([pe[:, :8], pe[:, 9:]], 1), rtol=0, atol=0)


def test_pos_embed_cache_follows_weight_changes():
    torch.manual_seed(0)
    model = Vim('tiny', **SMALL, img_size=64).eval()
    x = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        a = model(x)[-1]
        assert len(model._pos_cache._store) == 1
        model.pos_embed.mul_(3.0)  # in-place edit (as an optimizer step / load_state_dict)
        b = model(x)[-1]
        fresh = Vim('tiny', **SMALL, img_size=64).eval()
        fresh.load_state_dict(model.state_dict())
        torch.testing.assert_close(b, fresh(x)[-1])
    assert (a - b).abs().max() > 1e-3
    model.train()
    assert len(model._pos_cache._store) == 0
    model(x)[-1].sum().backward()  # training: no caching, gradient reaches pos_embed
    assert model.pos_embed.grad is not None and len(model._pos_cache._store) == 0


def test_with_cp_matches_plain():
    torch.manual_seed(0)
    model = Vim('tiny', **SMALL, drop_path_rate=0.).train()
    x = torch.randn(1, 3, 32, 48)
    grads = []
    for cp_on in (False, True):
        model.set_grad_checkpointing(cp_on)
        model.zero_grad()
        sum(o.sum() for o in model(x)).backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    assert Vim('tiny', **SMALL, with_cp=True).grad_checkpointing


def test_layer_ids():
    model = meta_model('tiny')
    L = model.num_layers
    assert L == 24
    ids = {n: model.get_layer_id(n) for n, _ in model.named_parameters()}
    assert ids['patch_embed.proj.weight'] == ids['pos_embed'] == ids['cls_token'] == 0
    assert ids['layers.0.mixer.A_log'] == 1 and ids['layers.23.norm.weight'] == 24
    assert ids['norm_f.weight'] == L + 1
    assert model.get_layer_id('backbone.layers.4.mixer.in_proj.weight') == 5
    assert set(ids.values()) == set(range(L + 2))


# ----- errors ---------------------------------------------------------------------------------
def test_bad_inputs():
    model = Vim('tiny', **SMALL)
    with pytest.raises(ValueError, match='3 input channels, got 1'):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        model(torch.randn(3, 32))
    # thinner than one patch: padded (an extreme aspect ratio after mmseg's test Resize)
    assert [o.shape[-2:] for o in model(torch.randn(1, 3, 8, 32))] == [(1, 2)] * 2
    assert Vim('tiny_s8', **SMALL)(torch.randn(1, 3, 1, 9))[0].shape[-2:] == (1, 2)
    with pytest.raises(KeyError, match='unknown arch'):
        Vim('huge')
    with pytest.raises(ValueError, match='out_indices'):
        Vim('tiny', **SMALL, out_indices=(2,))


def test_wrong_checkpoint_family_and_size():
    from mmvssm.backbones.arm import ARM
    model = Vim('tiny', **SMALL)
    arm = ARM('base', embed_dim=32, depth=2, d_state=8).state_dict()
    with pytest.raises(CheckpointMismatchError, match='checkpoint is not Vim: it looks like ARM'):
        model.load_official(arm)
    from mmvssm.backbones.mambaout import MambaOut
    mambaout = MambaOut('femto', depths=[1, 1, 1, 1]).state_dict()  # timm names: stem.*, stages.*
    with pytest.raises(CheckpointMismatchError, match='it looks like MambaOut'):
        model.load_official(mambaout)
    wider = Vim('tiny', embed_dim=48, depth=2, d_state=8).state_dict()
    with pytest.raises(CheckpointMismatchError, match='shape mismatch'):
        model.load_official(wider)
    rope = dict(model.state_dict(), **{'rope.freqs_cos': torch.zeros(16, 8)})
    with pytest.raises(CheckpointMismatchError, match='RoPE'):
        model.load_official(rope)
    deeper = Vim('tiny', embed_dim=32, depth=3, d_state=8).state_dict()
    with pytest.raises(CheckpointMismatchError, match=r'unexpected in checkpoint.*layers\.2'):
        model.load_official(deeper)
