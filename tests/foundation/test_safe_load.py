"""torch >= 2.6 weights_only loading: official pickles load, arbitrary classes are refused."""
import argparse
import pickle
import sys
import types

import pytest
import torch

import mmvssm  # noqa: F401  (registers the allow-list when mmengine is installed)
from mmvssm.utils.safe_load import allow_official_checkpoint_globals

mmengine_ckpt = pytest.importorskip('mmengine.runner.checkpoint')


class Arbitrary:
    """A class no allow-list names."""

    def __init__(self):
        self.x = 1


def _save(tmp_path, obj, name='ckpt.pth'):
    path = tmp_path / name
    torch.save(obj, path)
    return str(path)


def test_vim_style_namespace_loads_through_mmengine(tmp_path):
    allow_official_checkpoint_globals()
    args = argparse.Namespace(model='vim_tiny', lr=5e-4, epochs=300)
    path = _save(tmp_path, {'model': {'w': torch.ones(2)}, 'args': args, 'epoch': 299})
    ckpt = mmengine_ckpt.CheckpointLoader.load_checkpoint(path, map_location='cpu')
    assert ckpt['args'].model == 'vim_tiny' and torch.equal(ckpt['model']['w'], torch.ones(2))
    model = torch.nn.Linear(2, 1)
    sd = {'weight': torch.zeros(1, 2), 'bias': torch.zeros(1)}
    path = _save(tmp_path, {'state_dict': sd, 'args': args}, 'b.pth')
    mmengine_ckpt.load_checkpoint(model, path, map_location='cpu')
    assert torch.equal(model.weight, torch.zeros(1, 2))


def test_vmamba_style_yacs_cfgnode_loads(tmp_path, monkeypatch):
    # Build a pickle exactly as VMamba's checkpoints have it: a yacs.config.CfgNode (dict subclass).
    yacs = types.ModuleType('yacs')
    config = types.ModuleType('yacs.config')

    class CfgNode(dict):
        pass

    CfgNode.__module__ = 'yacs.config'
    CfgNode.__qualname__ = 'CfgNode'
    config.CfgNode = CfgNode
    yacs.config = config
    monkeypatch.setitem(sys.modules, 'yacs', yacs)
    monkeypatch.setitem(sys.modules, 'yacs.config', config)
    cfg = CfgNode(MODEL=CfgNode(TYPE='vssm', NAME='vssm_tiny'), TRAIN=CfgNode(EPOCHS=300))
    path = _save(tmp_path, {'model': {'w': torch.ones(3)}, 'config': cfg})
    ckpt = mmengine_ckpt.CheckpointLoader.load_checkpoint(path, map_location='cpu')  # yacs importable
    assert ckpt['config']['TRAIN']['EPOCHS'] == 300
    monkeypatch.delitem(sys.modules, 'yacs.config')  # a user without yacs installed
    monkeypatch.delitem(sys.modules, 'yacs')
    ckpt = mmengine_ckpt.CheckpointLoader.load_checkpoint(path, map_location='cpu')
    assert ckpt['config']['MODEL']['NAME'] == 'vssm_tiny'
    assert torch.equal(ckpt['model']['w'], torch.ones(3))


def test_arbitrary_class_is_refused(tmp_path):
    path = _save(tmp_path, {'model': {'w': torch.ones(1)}, 'evil': Arbitrary()})
    with pytest.raises(pickle.UnpicklingError, match='Unsupported global|weights_only'):
        mmengine_ckpt.CheckpointLoader.load_checkpoint(path, map_location='cpu')


def test_mmvssm_loader_names_the_file_on_refusal(tmp_path):
    from mmvssm.utils.checkpoint import load_checkpoint_file
    path = _save(tmp_path, {'evil': Arbitrary()})
    with pytest.raises(pickle.UnpicklingError, match='ckpt.pth'):
        load_checkpoint_file(path)
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        load_checkpoint_file(str(tmp_path / 'missing.pth'))


def test_mmengine_training_checkpoint_loads_and_getattr_stays_restricted(tmp_path):
    """What ``--resume`` / ``load_from`` / tools/test.py read: a MessageHub state with
    HistoryBuffers (their statistics methods pickle as ``getattr(HistoryBuffer, 'min')``) and numpy
    scalars (bytes as ``_codecs.encode``), with torch's default ``weights_only=True`` and nothing
    but mmvssm's allow-list; ``getattr`` on anything else stays refused."""
    import collections

    import numpy as np
    from mmengine.logging import MessageHub
    allow_official_checkpoint_globals()
    hub = MessageHub.get_instance('mmvssm_test_safe_load')
    for v in (1.0, 2.0, 3.0):
        hub.update_scalar('train/loss', v)
    hub.update_info('iter', 3)
    path = _save(tmp_path, {'state_dict': {'w': torch.ones(1)}, 'message_hub': hub.state_dict(),
                            'meta': {'seed': np.int64(7), 'lr': np.float32(0.5)}})
    ckpt = torch.load(path, map_location='cpu')
    assert ckpt['meta']['seed'] == 7 and ckpt['meta']['lr'] == np.float32(0.5)
    buf = ckpt['message_hub']['log_scalars']['train/loss']
    assert buf.mean() == 2.0 and buf.max() == 3.0 and buf.current() == 3.0

    class GetattrElsewhere:
        def __reduce__(self):
            return getattr, (collections.OrderedDict, 'fromkeys')

    path = _save(tmp_path, {'x': GetattrElsewhere()}, 'evil.pth')
    with pytest.raises(pickle.UnpicklingError, match='getattr'):
        torch.load(path, map_location='cpu')
