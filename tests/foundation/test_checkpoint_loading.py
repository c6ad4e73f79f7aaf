"""Checkpoint reading and strict loading: URLs unpickle with weights_only, ``~`` paths, prefixes,
explicit top-level keys, hints, and what a load resized or left initialised is reported."""
import functools
import http.server
import logging
import pickle
import threading

import pytest
import torch

from mmvssm.backbones import VSSM, Vim
from mmvssm.utils.checkpoint import (CheckpointMismatchError, extract_state_dict, is_remote,
                                     load_checkpoint_file)

VSSM_SMALL = dict(depths=[1, 1, 1, 1], dims=8, d_state=2)
VIM_SMALL = dict(embed_dim=32, depth=2, d_state=8)
SIDE_EFFECT = []


def _side_effect(tag):
    SIDE_EFFECT.append(tag)
    return tag


class Payload:
    """Unpickling it calls ``_side_effect``: what weights_only must refuse."""

    def __reduce__(self):
        return _side_effect, ('ran',)


@pytest.fixture
def http_dir(tmp_path, monkeypatch):
    """``(folder, base_url)``: files in ``folder`` served over http on localhost; torch.hub's
    cache in ``tmp_path``."""
    root = tmp_path / 'srv'
    root.mkdir()
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path / 'hub'))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()
    server.server_close()


def test_url_checkpoints_unpickle_with_weights_only(http_dir):
    import argparse
    root, url = http_dir
    torch.save({'model': {'w': torch.ones(2)}, 'args': argparse.Namespace(lr=1.0)},
               root / 'good.pth')
    ckpt = load_checkpoint_file(f'{url}/good.pth')
    assert torch.equal(ckpt['model']['w'], torch.ones(2)) and ckpt['args'].lr == 1.0
    torch.save({'model': {'w': torch.ones(2)}, 'evil': Payload()}, root / 'evil.pth')
    SIDE_EFFECT.clear()
    with pytest.raises(pickle.UnpicklingError, match='evil.pth'):
        load_checkpoint_file(f'{url}/evil.pth')
    assert SIDE_EFFECT == []


def test_mmengine_url_loads_also_use_weights_only(http_dir):
    """``load_from`` / ``--resume`` URLs go through mmengine's CheckpointLoader: mmvssm replaces
    its http(s) loader, which unpickles with weights_only=False."""
    ckpt_mod = pytest.importorskip('mmengine.runner.checkpoint')
    import mmvssm  # noqa: F401  (mmvssm.mm registers the loader)
    root, url = http_dir
    torch.save({'state_dict': {'w': torch.ones(2)}, 'evil': Payload()}, root / 'evil2.pth')
    SIDE_EFFECT.clear()
    with pytest.raises(pickle.UnpicklingError):
        ckpt_mod.CheckpointLoader.load_checkpoint(f'{url}/evil2.pth', map_location='cpu')
    assert SIDE_EFFECT == []
    torch.save({'state_dict': {'w': torch.ones(2)}}, root / 'good2.pth')
    ckpt = ckpt_mod.CheckpointLoader.load_checkpoint(f'{url}/good2.pth', map_location='cpu')
    assert torch.equal(ckpt['state_dict']['w'], torch.ones(2))


def test_home_relative_paths(tmp_path, monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path))
    torch.save({'model': {'w': torch.ones(1)}}, tmp_path / 'c.pth')
    assert torch.equal(load_checkpoint_file('~/c.pth')['model']['w'], torch.ones(1))
    pre = pytest.importorskip('mmvssm.mm.preflight')
    assert pre._check_checkpoint('load_from', '~/c.pth') == []
    assert 'not found' in pre._check_checkpoint('load_from', '~/missing.pth')[0]


def test_path_objects_load_as_paths(tmp_path):
    """A ``pathlib.Path`` is a path (as for ``torch.load``), not an already loaded checkpoint."""
    model = VSSM(**VSSM_SMALL)
    torch.save({'model': model.state_dict()}, tmp_path / 'c.pth')
    assert torch.equal(load_checkpoint_file(tmp_path / 'c.pth')['model']['patch_embed.0.weight'],
                       model.state_dict()['patch_embed.0.weight'])
    other = VSSM(**VSSM_SMALL, init_cfg=dict(type='Pretrained', checkpoint=tmp_path / 'c.pth'))
    other.init_weights()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 other.state_dict().values()))
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        other.load_official(tmp_path / 'missing.pth')


@pytest.mark.parametrize('content', [b'hello, not a checkpoint', 'truncated zip'])
def test_unreadable_file_is_named(tmp_path, content):
    """torch.load's own errors ('KeyError: 101', 'PytorchStreamReader failed ...') do not say
    which file; the loader's do, and keep the original error."""
    path = tmp_path / 'bad.pth'
    if content == 'truncated zip':
        torch.save({'w': torch.ones(1000)}, path)
        path.write_bytes(path.read_bytes()[:500])
    else:
        path.write_bytes(content)
    with pytest.raises(RuntimeError, match='bad.pth: torch.load cannot read it') as info:
        VSSM(**VSSM_SMALL).load_official(str(path))
    assert info.value.__cause__ is not None


@pytest.mark.parametrize('path, remote', [
    ('https://x.org/a.pth', True), ('s3://bucket/a.pth', True), ('open-mmlab://resnet50', True),
    ('cluster:s3://bucket/a.pth', True), ('/data/a.pth', False), ('work_dirs/a.pth', False),
    ('~/a.pth', False), ('C:\\ckpt\\a.pth', False), ('/data/run://1/a.pth', False),
    (None, False)])
def test_remote_or_local(tmp_path, path, remote):
    """One rule for the loader and the preflight: a URI scheme at the start, nothing else."""
    assert is_remote(path) is remote
    if not remote and path is not None:  # read locally: a missing file is named, not skipped
        with pytest.raises(FileNotFoundError, match='checkpoint not found'):
            load_checkpoint_file(path)
        pre = pytest.importorskip('mmvssm.mm.preflight')
        assert 'not found' in pre._check_checkpoint('load_from', path)[0]


def test_explicit_key_keeps_only_tensors():
    obj = {'model': {'w': torch.ones(1), 'num_classes': 1000}, 'epoch': 3}
    assert list(extract_state_dict(obj, 'model')[0]) == ['w']
    assert list(extract_state_dict(obj)[0]) == ['w']
    with pytest.raises(CheckpointMismatchError, match='not a dict of tensors'):
        extract_state_dict(obj, 'epoch')


def _detector_checkpoint(backbone, wrap=''):
    sd = {f'{wrap}backbone.{k}': v for k, v in backbone.state_dict().items()}
    sd[f'{wrap}neck.lateral_convs.0.conv.weight'] = torch.zeros(4, 8, 1, 1)
    return {'state_dict': sd, 'meta': {'epoch': 12}}


def test_prefix_as_mmengine_and_under_ddp_wrapper():
    src = VSSM('tiny', **VSSM_SMALL)
    for prefix in ('backbone', 'backbone.'):  # mmengine's PretrainedInit adds the dot itself
        model = VSSM('tiny', **VSSM_SMALL)
        model.load_official(_detector_checkpoint(src), prefix=prefix)
        assert torch.equal(model.patch_embed[0].weight, src.patch_embed[0].weight)
    for prefix in ('backbone.', 'module.backbone'):  # saved from a DDP-wrapped model
        model = VSSM('tiny', **VSSM_SMALL)
        model.load_official(_detector_checkpoint(src, wrap='module.'), prefix=prefix)
        assert torch.equal(model.patch_embed[0].weight, src.patch_embed[0].weight)
    with pytest.raises(CheckpointMismatchError, match=r"neck\..*prefix='backbone\.'"):
        VSSM('tiny', **VSSM_SMALL).load_official(_detector_checkpoint(src))


def test_out_norms_of_stages_not_returned_are_dropped():
    src = VSSM('tiny', **VSSM_SMALL, out_indices=(0, 1, 2, 3))
    model = VSSM('tiny', **VSSM_SMALL, out_indices=(1, 2, 3))
    report = model.load_official(src.state_dict())
    assert sorted(report['unexpected']) == ['outnorm0.bias', 'outnorm0.weight']
    assert torch.equal(model.outnorm3.weight, src.outnorm3.weight)


def test_pos_embed_resize_is_reported_and_shrinking_warns(caplog):
    """A larger grid into a smaller model (a stride-8 Vim checkpoint into a stride-16 model:
    nothing else in the file tells them apart) loads, with a warning naming the resize."""
    big = Vim('tiny', **VIM_SMALL, img_size=96)   # 6x6 grid
    small = Vim('tiny', **VIM_SMALL, img_size=64)  # 4x4 grid
    logger = logging.getLogger('test_ckpt')
    with caplog.at_level(logging.INFO, logger='test_ckpt'):
        report = small.load_official(big.state_dict(), logger=logger)
    assert report['resized'] == {'pos_embed': ((1, 37, 32), (1, 17, 32))}
    rec = [r for r in caplog.records if 'resized pos_embed' in r.getMessage()]
    assert rec and rec[0].levelno == logging.WARNING and '*_s8' in rec[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger='test_ckpt'):
        report = Vim('tiny', **VIM_SMALL, img_size=128).load_official(small.state_dict(),
                                                                      logger=logger)
    assert report['resized'] == {'pos_embed': ((1, 17, 32), (1, 65, 32))}
    rec = [r for r in caplog.records if 'resized pos_embed' in r.getMessage()]
    assert rec and rec[0].levelno == logging.INFO



def test_url_failure_reaches_every_rank(monkeypatch):
    """In a distributed run rank 0 loads first; when its load fails it still enters the barrier
    (the other ranks would wait there for ever) and then raises."""
    import torch.distributed as dist

    from mmvssm.utils import checkpoint as ck
    calls = []
    monkeypatch.setattr(dist, 'is_available', lambda: True)
    monkeypatch.setattr(dist, 'is_initialized', lambda: True)
    monkeypatch.setattr(dist, 'get_rank', lambda: 0)
    monkeypatch.setattr(dist, 'get_world_size', lambda: 2)
    monkeypatch.setattr(dist, 'barrier', lambda: calls.append('barrier'))

    def refuse(*a, **k):
        calls.append('load')
        raise pickle.UnpicklingError('refused')
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', refuse)
    with pytest.raises(pickle.UnpicklingError, match='refused'):
        ck.load_url_weights_only('http://127.0.0.1:1/x.pth')
    assert calls == ['load', 'barrier']
