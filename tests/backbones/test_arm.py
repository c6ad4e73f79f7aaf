"""ARM backbone: official names/shapes, parity, pretraining-checkpoint conversion, 4-scan mixer."""
import json

import pytest
import torch
import torch.nn.functional as F

from fixtures_util import fixture_file, fixtures_dir
from mmvssm.adapters import DeconvPyramid
from mmvssm.backbones.arm import ARM
from mmvssm.layers.mamba_mixer import MambaMixer
from mmvssm.utils.checkpoint import CheckpointMismatchError

SMALL = dict(embed_dim=32, depth=2, d_state=8)
VARIANTS = {'arm_base_pz16': 'base', 'arm_large_pz16': 'large'}  # arm_huge kept back: counts only
PUBLISHED_M = {'base': 85.0, 'large': 297.0, 'huge': 662.7}  # anchors §4.1 (224², with head)


def meta_model(arch, **kw):
    with torch.device('meta'):
        return ARM(arch, **kw)


def with_head(model, num_classes=1000):
    return sum(p.numel() for p in model.parameters()) + model.embed_dim * num_classes + num_classes


# ----- names and shapes -----------------------------------------------------------------------
@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_official_keys_match_one_to_one(variant):
    path = fixtures_dir() / 'state_dict_keys' / f'{variant}.json'
    if not path.is_file():
        pytest.skip(f'{path} not available')
    ref = json.loads(path.read_text())
    official = {k: torch.empty(s, device='meta') for k, s in ref['params'].items()}
    converted = ARM.convert_official(official)
    model = meta_model(VARIANTS[variant])
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    body = {k: tuple(v.shape) for k, v in converted.items() if not k.startswith('head.')}
    assert body == ours
    assert sorted(set(converted) - set(ours)) == ['head.bias', 'head.weight']
    assert with_head(model) == ref['num_params']


@pytest.mark.parametrize('arch', sorted(PUBLISHED_M))
def test_param_counts_match_published(arch):
    assert round(with_head(meta_model(arch)) / 1e6, 1) == PUBLISHED_M[arch]


def test_huge_from_anchors():
    """ARM-H (kept back from the fixtures): D 1536, 24 blocks, expand 1, SwiGLU hidden 4096."""
    model = meta_model('huge')
    blk = model.layers[0]
    assert (model.embed_dim, model.depth) == (1536, 24)
    assert (blk.mixer.d_inner, blk.mixer.dt_rank, blk.mlp.w1.out_features) == (1536, 96, 4096)
    assert with_head(model) == 662_682_088


# ----- parity ---------------------------------------------------------------------------------
def test_parity_with_official():
    data = torch.load(fixture_file('parity', 'arm_depth2.pt'), weights_only=True)
    kw, feats, sd = data['constructor_kwargs'], data['features'], data['state_dict']
    assert kw['bimamba_type'] == 'v3' and kw['use_middle_cls_token']
    model = ARM(dict(embed_dim=kw['embed_dim'], depth=kw['depth'], patch_size=kw['patch_size'],
                     stride=kw['stride'], d_state=16, expand=1, img_size=kw['img_size']),
                drop_path_rate=kw['drop_path_rate'], out_indices=range(kw['depth'])).eval()
    report = model.load_official(sd)
    assert report['missing'] == [] and sorted(report['unexpected']) == ['head.bias', 'head.weight']
    seen = {}
    hook = model.layers[0].mixer.register_forward_hook(
        lambda m, args, out: seen.update(input=args[0], output=out))
    with torch.no_grad():
        pooled = model.forward_cls(data['input'], global_pool=True)
        cls = model.forward_cls(data['input'], global_pool=False)
        outs, *_ = model.forward_layers(data['input'], dense=False)
        maps = model(data['input'])
    hook.remove()
    head = lambda t: F.linear(t, sd['head.weight'], sd['head.bias'])  # noqa: E731
    diffs = {
        'pooled_feature_global_pool': (pooled - feats['pooled_feature_global_pool']).abs().max(),
        'cls_feature': (cls - feats['cls_feature']).abs().max(),
        'logits': (head(pooled) - data['output']).abs().max(),
        'logits_no_pool': (head(cls) - data['extra_outputs']['logits_with_global_pool_False']).abs().max(),
        'layer0.mixer.input': (seen['input'] - feats['layer0.mixer.input']).abs().max(),
        'layer0.mixer.output': (seen['output'] - feats['layer0.mixer.output']).abs().max()}
    for i, x in outs.items():
        diffs[f'layer{i}.output'] = (x - feats[f'layer{i}.output']).abs().max()
        ref = feats[f'layer{i}.output']
        ref = torch.cat([ref[:, :8], ref[:, 9:]], 1).transpose(1, 2).reshape(maps[i].shape)
        diffs[f'dense{i}'] = (maps[i] - ref).abs().max()
    worst = max(float(v) for v in diffs.values())
    print(f'arm_depth2.pt: max abs diff {worst:.3g}')
    assert worst <= 1e-4, {k: float(v) for k, v in diffs.items()}


# ----- the 4-scan mixer on real H x W grids ---------------------------------------------------
def _transpose_tokens(t, h, w, c=None):
    """Tokens of an h x w grid (cls at c) -> tokens of the transposed w x h grid (cls at c)."""
    if c is not None:
        cls, t = t[:, c:c + 1], torch.cat([t[:, :c], t[:, c + 1:]], 1)
    t = t.reshape(t.shape[0], h, w, -1).transpose(1, 2).reshape(t.shape[0], h * w, -1)
    return t if c is None else torch.cat([t[:, :c], cls, t[:, c:]], 1)


@pytest.mark.parametrize('hw,cls', [((3, 5), None), ((3, 5), 7), ((3, 3), 4), ((4, 6), 12)])
def test_column_scans_are_row_scans_of_the_transposed_grid(hw, cls):
    """col / col_rev on an H x W grid == row / row_rev on the W x H transposed grid (real H, W,
    cls kept at its index), including odd and non-square grids."""
    torch.manual_seed(0)
    h, w = hw
    col = MambaMixer(16, d_state=4, expand=1, directions=('col', 'col_rev')).eval()
    row = MambaMixer(16, d_state=4, expand=1, directions=('row', 'row_rev')).eval()
    sd = {k.replace('_c_b', '_b').replace('_c', ''): v for k, v in col.state_dict().items()}
    row.load_state_dict(sd)
    x = torch.randn(2, h * w + (cls is not None), 16)
    with torch.no_grad():
        a = col(x, (h, w), cls)
        b = _transpose_tokens(row(_transpose_tokens(x, h, w, cls), (w, h), cls), w, h, cls)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_mixer_rejects_inconsistent_grid():
    mixer = MambaMixer(16, d_state=4, expand=1, directions=('row', 'col'))
    with pytest.raises(ValueError, match='needs the token grid'):
        mixer(torch.randn(1, 9, 16))
    with pytest.raises(ValueError, match='do not match a 3x4 grid'):
        mixer(torch.randn(1, 10, 16), (3, 4), 5)
    with pytest.raises(ValueError, match='directions'):
        MambaMixer(16, directions=('row', 'diag'))


# ----- pretraining checkpoints ----------------------------------------------------------------
def _fake_pretrain_checkpoint(model, grid):
    """A ``models_pretrain.py``-style state dict for ``model``'s sizes: single-direction mixers,
    no cls token / norm_f, ``pos_embed [1, grid*grid, D]``, plus decoder keys."""
    torch.manual_seed(1)
    sd = {}
    for k, v in model.state_dict().items():
        if any(s in k for s in ('_b.', '_b_log', 'D_b', '_c.', '_c_log', 'D_c')):
            continue
        if k in ('cls_token', 'norm_f.weight', 'norm_f.bias'):
            continue
        sd[k] = torch.randn_like(v)
    sd['pos_embed'] = torch.randn(1, grid * grid, model.embed_dim)
    sd.update({'ar_token': torch.zeros(1, 1, 8), 'dec_pos_embed': torch.zeros(1, grid * grid, 8),
               'enc2dec.weight': torch.zeros(32, 4 * model.embed_dim),
               'dec_block.0.attn2.q.weight': torch.zeros(8, 8), 'norm_1.weight': torch.ones(32),
               'ar_norm.weight': torch.ones(8), 'ar_pred.weight': torch.zeros(768, 8),
               'mask': torch.zeros(4, 4)})
    return sd


def test_loads_pretraining_checkpoint_like_arm_finetuning():
    model = ARM('base', **SMALL, img_size=64)  # 4x4 grid (+ cls) in the model
    init = {k: v.clone() for k, v in model.state_dict().items()}
    sd = _fake_pretrain_checkpoint(model, grid=3)  # 3x3 pretraining grid, no cls
    report = model.load_official({'model': sd})
    assert report['missing'] == [] and report['unexpected'] == []
    # what the pretraining file lacks keeps the model's init, and the load says so
    assert report['initialised'] == ['cls_token', 'norm_f.bias', 'norm_f.weight']
    assert report['resized'] == {'pos_embed': ((1, 10, 32), (1, 17, 32))}
    own = model.state_dict()
    for i in range(2):
        p = f'layers.{i}.mixer.'
        for s in ('_b', '_c', '_c_b'):  # every branch starts as a copy of the single direction
            torch.testing.assert_close(own[f'{p}conv1d{s}.weight'], sd[f'{p}conv1d.weight'])
            torch.testing.assert_close(own[f'{p}dt_proj{s}.bias'], sd[f'{p}dt_proj.bias'])
            torch.testing.assert_close(own[f'{p}x_proj{s}.weight'], sd[f'{p}x_proj.weight'])
            torch.testing.assert_close(own[f'{p}A{s}_log'], sd[f'{p}A_log'])
            torch.testing.assert_close(own[f'{p}D{s}'], sd[f'{p}D'])
        torch.testing.assert_close(own[f'layers.{i}.mlp.w3.weight'], sd[f'layers.{i}.mlp.w3.weight'])
    assert own['pos_embed'].shape == (1, 17, 32)
    assert own['pos_embed'][0, 8].abs().max() == 0  # zero cls position inserted at M // 2
    for k in ('cls_token', 'norm_f.weight', 'norm_f.bias'):  # kept at init (official non-strict)
        torch.testing.assert_close(own[k], init[k])
    assert ARM.is_pretrain_checkpoint(sd) and not ARM.is_pretrain_checkpoint(own)


# ----- dense forward --------------------------------------------------------------------------
@pytest.mark.parametrize('hw', [(64, 64), (200, 320), (97, 131)])
def test_backbone_and_adapter_shapes_and_backward(hw):
    torch.manual_seed(0)
    model = ARM('base', **SMALL, drop_path_rate=0.1, with_cp=hw == (64, 64))
    neck = DeconvPyramid(32, out_channels=24)
    x = torch.randn(1, 3, *hw, requires_grad=True)
    maps = model(x)
    g = (-(-hw[0] // 16), -(-hw[1] // 16))
    assert len(maps) == 2 and all(m.shape == (1, 32, *g) for m in maps)
    outs = neck(maps * 2)
    for s, o in zip((4, 8, 16, 32), outs):
        assert o.shape == (1, 24, -(-g[0] * 16 // s), -(-g[1] * 16 // s))
    sum(o.mean() for o in outs).backward()
    assert torch.isfinite(x.grad).all()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, n


def test_final_norm_out_indices_and_layer_ids():
    torch.manual_seed(0)
    model = ARM('base', embed_dim=32, depth=4, d_state=8, out_indices=(1, 3), final_norm=True).eval()
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        outs, *_ = model.forward_layers(x)
        maps = model(x)
    tok = torch.cat([outs[3][:, :3], outs[3][:, 4:]], 1)
    torch.testing.assert_close(maps[1].flatten(2).transpose(1, 2), model.norm_f(tok))
    assert model.norm_f.weight.requires_grad
    assert meta_model('base').out_indices == (2, 5, 8, 11)
    L = model.num_layers
    ids = {n: model.get_layer_id(n) for n, _ in model.named_parameters()}
    assert ids['pos_embed'] == ids['cls_token'] == ids['patch_embed.proj.bias'] == 0
    assert ids['layers.2.mlp.w1.weight'] == 3 and ids['norm_f.bias'] == L + 1
    assert set(ids.values()) == set(range(L + 2))


# ----- errors ---------------------------------------------------------------------------------
def test_bad_inputs_and_wrong_checkpoints():
    from mmvssm.backbones.vim import Vim
    model = ARM('base', **SMALL)
    with pytest.raises(ValueError, match='3 input channels, got 4'):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        model(torch.randn(32, 32))
    # thinner than one patch: padded (an extreme aspect ratio after mmseg's test Resize)
    assert [o.shape[-2:] for o in model(torch.randn(1, 3, 32, 15))] == [(2, 1)] * len(
        model.out_indices)
    with pytest.raises(CheckpointMismatchError, match='checkpoint is not ARM: it looks like Vim'):
        model.load_official(Vim('tiny', **SMALL).state_dict())
    with pytest.raises(CheckpointMismatchError, match='shape mismatch'):
        model.load_official(ARM('base', embed_dim=48, depth=2, d_state=8).state_dict())
    with pytest.raises(KeyError, match='unknown arch'):
        ARM('tiny')
