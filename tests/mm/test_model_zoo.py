"""Model zoo registry, docs/model_zoo.md in sync, config URLs known, and the converter tool."""
import importlib
import importlib.util
import re
from pathlib import Path

import pytest
import torch

from fixtures_util import fixture_file
from mmvssm import model_zoo

REPO = Path(__file__).resolve().parents[2]


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f'_tool_{name}', REPO / 'tools' / f'{name}.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def backbone(family):
    module, name = load_tool('convert_checkpoint').FAMILY_CLASSES[family]
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as e:  # pragma: no cover - while the package is being assembled
        pytest.skip(f'{module} not importable yet: {e}')


def test_docs_up_to_date():
    doc = REPO / 'docs' / 'model_zoo.md'
    assert doc.read_text() == model_zoo.model_zoo_markdown(), (
        'docs/model_zoo.md is stale: python -c "from mmvssm.model_zoo import '
        'write_model_zoo_markdown as w; w()"')


def test_every_released_checkpoint_listed():
    names = set(model_zoo.ZOO)
    assert {'vim_tiny', 'vim_small', 'vim_base', 'vim_tiny_s8', 'vim_small_s8'} <= names
    assert {f'vmamba_{s}_v0' for s in ('tiny', 'small', 'base')} <= names
    assert {'vmamba_tiny_s2l5', 'vmamba_small_s2l15', 'vmamba_base_s2l15', 'vmamba_tiny_s1l8',
            'vmamba_small_s1l20', 'vmamba_base_s1l20'} <= names
    assert {f'mambaout_{s}' for s in ('femto', 'kobe', 'tiny', 'small', 'base')} <= names
    assert {'arm_base', 'arm_large', 'arm_huge'} <= names
    for e in model_zoo.ZOO.values():
        assert e.family in model_zoo.FAMILIES
        if e.url:
            assert e.url.startswith('https://') and e.url.endswith(e.filename)
        else:
            assert not e.verified and e.note


@pytest.mark.parametrize('family', ['vim', 'vssm', 'mambaout', 'arm'])
def test_arch_presets_exist(family):
    cls = backbone(family)
    for name in model_zoo.list_models(family):
        assert model_zoo.get(name).arch in cls.arch_zoo, name


def test_helpers():
    assert model_zoo.checkpoint_url('vmamba_tiny_s1l8') == (
        'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/'
        'vssm1_tiny_0230s_ckpt_epoch_264.pth')
    assert model_zoo.checkpoint_url('vim_tiny') == ('https://huggingface.co/hustvl/'
                                                    'Vim-tiny-midclstok/resolve/main/'
                                                    'vim_t_midclstok_76p1acc.pth')
    assert model_zoo.get('mambaout_tiny').key is None
    with pytest.raises(ValueError, match='local path'):
        model_zoo.checkpoint_url('arm_base')
    with pytest.raises(KeyError, match='known'):
        model_zoo.get('vim_huge')
    assert model_zoo.cache_path('mambaout_tiny').endswith(
        str(Path('hub') / 'checkpoints' / 'mambaout_tiny.pth'))
    assert model_zoo.find_by_url('/data/vssm1_tiny_0230s_ckpt_epoch_264.pth').name == \
        'vmamba_tiny_s1l8'


def _config_chain(path):
    """The config file's text, then its local ``_base_`` files' (child first; text only, fast)."""
    text = path.read_text()
    chain = [text]
    m = re.search(r'_base_\s*=\s*(\[[^\]]*\]|\'[^\']*\')', text)
    for base in re.findall(r"'([^']+)'", m.group(1)) if m else []:
        if '::' not in base:
            chain += _config_chain((path.parent / base).resolve())
    return chain


def _last(pattern, chain):
    """First match of ``pattern`` going from the child config to its bases."""
    for text in chain:
        found = re.findall(pattern, text)
        if found:
            return found[-1]
    return None


def test_config_checkpoints_are_zoo_entries():
    """Every URL a config loads is a zoo entry whose family and arch match the backbone."""
    configs = [p for d in ('det', 'seg') for p in sorted((REPO / 'configs' / d).glob('*.py'))]
    if not configs:
        pytest.skip('no configs yet')
    classes = {'vim': 'Vim', 'vssm': 'VSSM', 'mambaout': 'MambaOut', 'arm': 'ARM'}
    seen = 0
    for path in configs:
        chain = _config_chain(path)
        url = _last(r"checkpoint\s*=\s*'(https?://[^']+)'", chain)
        if url is None:
            continue
        entry = model_zoo.find_by_url(url)
        assert entry is not None and entry.url == url, f'{path.name}: {url} not in the zoo'
        bb_type = _last(r"type='(Vim|VSSM|MambaOut|ARM)'", chain)
        arch = _last(r"\barch='([\w]+)'", chain)
        assert (bb_type, arch) == (classes[entry.family], entry.arch), (path.name, entry.name)
        seen += 1
    assert seen > 0


# ----- converter -------------------------------------------------------------------------------
def _arch_from_fixture(family, kw, cls):
    if family == 'vim':
        return dict(embed_dim=kw['embed_dim'], depth=kw['depth'], patch_size=kw['patch_size'],
                    stride=kw['stride'], d_state=kw.get('d_state', 16), expand=2,
                    img_size=kw['img_size'])
    if family == 'arm':
        return dict(embed_dim=kw['embed_dim'], depth=kw['depth'], patch_size=kw['patch_size'],
                    stride=kw['stride'], d_state=16, expand=1, img_size=kw['img_size'])
    if family == 'vssm':
        return cls.arch_from_official(kw)
    return dict(depths=kw['depths'], dims=kw['dims'])


@pytest.mark.parametrize('family,fixture,wrap', [
    ('vim', 'vim_tiny64.pt', 'model'), ('vssm', 'vmamba_v2_s2.pt', 'model'),
    ('vssm', 'vmamba_v0.pt', 'model'), ('mambaout', 'mambaout_small_dims.pt', None),
    ('arm', 'arm_depth2.pt', 'model')])
def test_convert_checkpoint_cli(tmp_path, family, fixture, wrap):
    import json
    cls = backbone(family)
    data = torch.load(fixture_file('parity', fixture), weights_only=True)
    official = data['state_dict']
    src = tmp_path / 'official.pth'
    torch.save({wrap: official, 'epoch': 3} if wrap else official, src)
    arch = _arch_from_fixture(family, data['constructor_kwargs'], cls)
    dst = tmp_path / 'out' / 'converted.pth'
    load_tool('convert_checkpoint').main([str(src), str(dst), '--family', family,
                                          '--arch', json.dumps(arch)])
    out = torch.load(dst, weights_only=True)
    assert set(out) == {'state_dict', 'meta'} and out['meta']['family'] == family
    fresh = cls(arch=arch)
    assert set(out['state_dict']) == set(fresh.state_dict())
    converted = cls.convert_official(dict(official))
    for k, v in out['state_dict'].items():
        if k in converted:
            torch.testing.assert_close(v, converted[k].reshape(v.shape), rtol=0, atol=0)
        else:  # only the det/seg output norms are not in a classification file
            assert k in out['meta']['allowed_missing'] and 'norm' in k
    assert all(k.startswith(('head.', 'classifier.')) for k in out['meta']['dropped'])
    assert out['meta']['initialised'] == [] and out['meta']['resized'] == {}
    # the converted file loads strictly through init_cfg
    again = cls(arch=arch, init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    again.init_weights()
    for k, v in again.state_dict().items():
        torch.testing.assert_close(v, out['state_dict'][k], rtol=0, atol=0)


def test_convert_rejects_wrong_family(tmp_path):
    backbone('mambaout')
    data = torch.load(fixture_file('parity', 'vmamba_v2_s2.pt'), weights_only=True)
    src = tmp_path / 'vssm.pth'
    torch.save({'model': data['state_dict']}, src)
    from mmvssm.utils.checkpoint import CheckpointMismatchError
    with pytest.raises(CheckpointMismatchError):
        load_tool('convert_checkpoint').convert(str(src), str(tmp_path / 'x.pth'),
                                                family='mambaout', arch='femto')
    assert not (tmp_path / 'x.pth').exists()


def test_convert_by_zoo_name(tmp_path, capsys):
    """``--name`` picks family, arch and key; a timm-layout flat file of MambaOut-Femto."""
    MambaOut = backbone('mambaout')
    torch.manual_seed(0)
    sd = {k: v for k, v in MambaOut(arch='femto', out_norm=False).state_dict().items()}
    sd['head.fc.weight'] = torch.zeros(1000, 288)
    src, dst = tmp_path / 'mambaout_femto.pth', tmp_path / 'femto_mmvssm.pth'
    torch.save(sd, src)
    load_tool('convert_checkpoint').main([str(src), str(dst), '--name', 'mambaout_femto'])
    assert 'dropped 1 keys' in capsys.readouterr().out
    out = torch.load(dst, weights_only=True)
    assert out['meta']['zoo_name'] == 'mambaout_femto' and out['meta']['arch'] == 'femto'
    for k, v in sd.items():
        if not k.startswith('head.'):
            torch.testing.assert_close(out['state_dict'][k], v, rtol=0, atol=0)


def test_convert_records_a_resized_position_grid(tmp_path, capsys):
    """A checkpoint whose grid differs from the arch's (e.g. a stride-8 file converted as a
    stride-16 arch) converts, and the meta and the printout say what was resized."""
    import json
    Vim = backbone('vim')
    arch = dict(embed_dim=32, depth=2, d_state=8, patch_size=16, stride=16, expand=2)
    src, dst = tmp_path / 'vim.pth', tmp_path / 'vim_mmvssm.pth'
    torch.save({'model': Vim(arch=dict(arch, img_size=96)).state_dict()}, src)  # 6x6 grid
    load_tool('convert_checkpoint').main([str(src), str(dst), '--family', 'vim',
                                          '--arch', json.dumps(dict(arch, img_size=64))])
    assert "resized: {'pos_embed': ((1, 37, 32), (1, 17, 32))}" in capsys.readouterr().out
    meta = torch.load(dst, weights_only=True)['meta']
    assert meta['resized'] == {'pos_embed': [[1, 37, 32], [1, 17, 32]]}
