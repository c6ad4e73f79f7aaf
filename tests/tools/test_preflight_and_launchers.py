"""Checkpoint preflight (readable file, resume needs a training checkpoint), data-error hints,
the torchrun interpreter of tools/dist_*.sh and ``tools/benchmark.py --cfg-options k=v``.

Cheap: the preflight checks run on small hand-made checkpoints; the tools run in-process only
for one --resume / corrupt-checkpoint case each (nothing may be written to the work dir).
"""
import os
import os.path as osp
import shutil
import stat
import subprocess

import pytest
import torch

import mmvssm  # noqa: F401  (registers the weights-only allow-list)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
pre = pytest.importorskip('mmvssm.mm.preflight')


class NotAllowed:
    """A class the weights-only allow-list does not name."""


def _cfg(tmp_path, **kw):
    from mmengine.config import Config
    return Config(dict(train_dataloader=dict(dataset=dict(data_root=str(tmp_path))), **kw))


def _problems(cfg, mode='train', **kw):
    with pytest.raises(pre.PreflightError) as e:
        pre.preflight(cfg, mode, **kw)
    return e.value.problems


def _training_checkpoint(path):
    """What mmengine's CheckpointHook writes (MessageHub HistoryBuffers, numpy scalars)."""
    import numpy as np
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('mmvssm_test_preflight')
    hub.update_scalar('train/loss', 1.0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    torch.save(dict(meta=dict(epoch=0, iter=4, seed=np.int64(7)), state_dict=model.state_dict(),
                    message_hub=hub.state_dict(), optimizer=opt.state_dict(),
                    param_schedulers=[]), path)
    return str(path)


# ---- 1. --resume needs an mmengine training checkpoint -----------------------------------------
def test_resume_needs_training_checkpoint(tmp_path):
    weights = tmp_path / 'weights.pth'
    torch.save(torch.nn.Linear(2, 1).state_dict(), weights)
    official = tmp_path / 'official.pth'  # e.g. an ImageNet checkpoint of the paper's code
    torch.save({'model': torch.nn.Linear(2, 1).state_dict(), 'epoch': 299}, official)
    good = _training_checkpoint(tmp_path / 'iter_4.pth')

    for path in (weights, official):  # tools/train.py --resume PATH
        (p,) = _problems(_cfg(tmp_path, resume=True, load_from=str(path)))
        assert p.startswith('resume: not an mmengine training checkpoint'), p
        assert str(path) in p and f'--cfg-options load_from={path}' in p
        assert "lacks ['meta', 'state_dict', 'message_hub']" in p
    # the same files are fine as weights (load_from without resume)
    pre.preflight(_cfg(tmp_path, load_from=str(weights)), 'train')
    pre.preflight(_cfg(tmp_path, resume=True, load_from=good), 'train')

    work = tmp_path / 'work'  # --resume without a path: <work_dir>/last_checkpoint
    work.mkdir()
    (work / 'last_checkpoint').write_text(str(weights))
    (p,) = _problems(_cfg(tmp_path, resume=True, work_dir=str(work)))
    assert 'not an mmengine training checkpoint' in p and 'last_checkpoint' in p
    (work / 'last_checkpoint').write_text(good)
    pre.preflight(_cfg(tmp_path, resume=True, work_dir=str(work)), 'train')
    for empty in ('', ' \n'):  # an interrupted save: mmengine would "resume from ''"
        (work / 'last_checkpoint').write_text(empty)
        (p,) = _problems(_cfg(tmp_path, resume=True, work_dir=str(work)))
        assert p.startswith(f"resume: {work / 'last_checkpoint'} names no checkpoint"), p


def test_coco_test_dev_without_annotations_when_format_only(tmp_path):
    """An image-info json (COCO test-dev: no "annotations") is valid for a format_only test run,
    which mmdet runs, and refused otherwise."""
    import json
    from mmengine.config import Config
    info = tmp_path / 'image_info_test-dev.json'
    info.write_text(json.dumps(dict(
        images=[dict(id=1, file_name='a.jpg', width=4, height=4)],
        categories=[dict(id=1, name='ring')])))
    (tmp_path / 'img').mkdir()
    (tmp_path / 'img' / 'a.jpg').write_bytes(b'')

    def cfg(format_only):
        return Config(dict(
            test_dataloader=dict(dataset=dict(data_root=str(tmp_path), ann_file=info.name,
                                              data_prefix=dict(img='img'))),
            test_evaluator=dict(type='CocoMetric', ann_file=str(info), format_only=format_only)))

    pre.preflight(cfg(True), 'test')
    problems = _problems(cfg(False), 'test')
    assert len(problems) == 2 and all("lacks the COCO key(s) ['annotations']" in p
                                      for p in problems), problems
    no_images = tmp_path / 'no_images.json'  # the other keys stay required
    no_images.write_text(json.dumps(dict(categories=[])))
    assert "lacks the COCO key(s) ['images']" in pre.check_coco_json(
        str(no_images), annotations=False)[0]


# ---- 2. unreadable checkpoint files ------------------------------------------------------------
def test_unreadable_checkpoints_are_named(tmp_path):
    good = tmp_path / 'good.pth'
    torch.save({'state_dict': {'w': torch.ones(3)}}, good)
    legacy = tmp_path / 'legacy.pth'
    torch.save({'w': torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(good.read_bytes()[:200])
    text = tmp_path / 'page.pth'  # e.g. an HTML error page saved as the download
    text.write_text('<!DOCTYPE html><html>Not Found</html>')
    other = tmp_path / 'other.pth'
    torch.save({'w': torch.ones(1), 'x': NotAllowed()}, other)

    for path in (good, legacy):
        assert pre._check_checkpoint('load_from', str(path)) == []
    for path in (truncated, text):
        (p,) = pre._check_checkpoint('load_from', str(path))
        assert p.startswith(f'load_from: not a readable torch checkpoint: {path} ('), p
        assert p.count(str(path)) == 1 and p.endswith(')'), p  # torch's reason, not the wrap
    assert 'central directory' in pre._check_checkpoint('k', str(truncated))[0]
    assert "b'<!DOCTYPE html>" in pre._check_checkpoint('k', str(text))[0]
    (p,) = pre._check_checkpoint('checkpoint', str(other))
    assert str(other) in p and 'NotAllowed' in p and 'mmvssm/utils/safe_load.py' in p, p
    assert 'weights_only=False' not in p and 'corrupt' not in p
    assert pre._check_checkpoint('load_from', 'https://example.com/x.pth') == []
    assert pre._check_checkpoint('load_from', 's3://bucket/x.pth') == []

    # every checkpoint key of a run: test CHECKPOINT, load_from, init_cfg Pretrained
    probs = _problems(_cfg(tmp_path, test_dataloader=dict(dataset=dict(data_root=str(tmp_path)))),
                      'test', checkpoint=str(text))
    assert probs[0].startswith('checkpoint: not a readable torch checkpoint')
    cfg = _cfg(tmp_path, load_from=str(truncated), model=dict(backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=str(text)))))
    assert [p.split(':')[0] for p in _problems(cfg)] == [
        'load_from', 'model.backbone.init_cfg.checkpoint']


def test_tools_stop_before_the_work_dir(tmp_path, monkeypatch):
    """tools/train.py --resume WEIGHTS and tools/test.py CORRUPT: a PreflightError, no folder."""
    pytest.importorskip('mmseg')
    from mmvssm.datasets.toy import make_ade
    from test_tools import SEG_CFG, _tool
    make_ade(str(tmp_path / 'data' / 'toy'), num_train=1, num_val=1)
    monkeypatch.chdir(tmp_path)
    weights = tmp_path / 'weights.pth'
    torch.save(torch.nn.Linear(2, 1).state_dict(), weights)
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(b'PK\x03\x04' + b'\0' * 100)
    with pytest.raises(pre.PreflightError, match='resume: not an mmengine training checkpoint'):
        _tool('train').main([SEG_CFG, '--work-dir', str(tmp_path / 'w1'), '--resume',
                             str(weights)])
    with pytest.raises(pre.PreflightError, match='checkpoint: not a readable torch checkpoint'):
        _tool('test').main([SEG_CFG, str(truncated), '--work-dir', str(tmp_path / 'w2')])
    if not torch.cuda.is_available():  # AMP: --amp, or a config that has it already
        with pytest.raises(RuntimeError, match='--amp needs a GPU'):
            _tool('train').main([SEG_CFG, '--work-dir', str(tmp_path / 'w3'), '--amp'])
        with pytest.raises(RuntimeError, match='the config trains with AmpOptimWrapper, which '
                                               'needs a GPU'):
            _tool('train').main([SEG_CFG, '--work-dir', str(tmp_path / 'w4'), '--cfg-options',
                                 'optim_wrapper.type=AmpOptimWrapper'])
    assert not any((tmp_path / w).exists() for w in ('w1', 'w2', 'w3', 'w4'))


# ---- 3. data errors: "corrupt file?" only for reading errors -----------------------------------
def test_data_error_hints(tmp_path):
    import numpy as np
    from mmcv.transforms import LoadImageFromFile, Resize
    from mmengine.dataset import Compose
    pre.explain_data_errors()
    img = tmp_path / 'broken.jpg'
    img.write_bytes(b'')
    with pytest.raises(pre.DataLoadError, match=r'LoadImageFromFile failed on .*broken\.jpg.*'
                                                r'\(is the file corrupt or truncated\?\)$'):
        Compose([LoadImageFromFile()])(dict(img_path=str(img)))

    def truncated_png(data):  # what PIL raises for a broken label PNG, from any transform
        raise OSError('image file is truncated')

    with pytest.raises(pre.DataLoadError, match='corrupt or truncated'):
        Compose([truncated_png])(dict(img_path=str(img)))
    # a config value (--cfg-options test_dataloader.dataset.pipeline.1.scale=(0,0))
    sample = dict(img_path=str(img), img=np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(pre.DataLoadError) as e:
        Compose([lambda d: d, Resize(scale=(0, 0))])(sample)
    msg = str(e.value)
    assert msg.startswith(f'Resize failed on img_path={img}') and 'inv_scale_x > 0' in msg
    assert msg.endswith('(not a file-reading error: check the Resize settings, pipeline[1], '
                        'in the config)') and 'corrupt' not in msg


# ---- 4. tools/dist_*.sh: the repository's .venv python by default ------------------------------
def _stub(path, name):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "{name} $*"\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_dist_launcher_python(tmp_path):
    """A copy of tools/dist_train.sh + _dist_env.sh with stub interpreters that print their name:
    .venv/bin/python of the copy's repository when present, else ``python``; PYTHON overrides."""
    repo = tmp_path / 'repo'
    (repo / 'tools').mkdir(parents=True)
    for name in ('dist_train.sh', '_dist_env.sh'):
        shutil.copy(osp.join(ROOT, 'tools', name), repo / 'tools' / name)
    _stub(repo / '.venv' / 'bin' / 'python', 'VENV')
    _stub(tmp_path / 'bin' / 'python', 'PATH')
    _stub(tmp_path / 'bin' / 'mine', 'MINE')
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHON', 'VIRTUAL_ENV')}
    env['PATH'] = f'{tmp_path / "bin"}{os.pathsep}{env.get("PATH", "")}'

    def launch(**extra):
        out = subprocess.run(['bash', 'tools/dist_train.sh', 'cfg.py', '2', '--amp'],
                             cwd=repo, env=dict(env, **extra), capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    tools = osp.realpath(repo / 'tools')
    assert launch() == ('VENV -m torch.distributed.run --nnodes=1 --node_rank=0 '
                        '--master_addr=127.0.0.1 --nproc_per_node=2 --master_port=29500 '
                        f'{tools}/train.py cfg.py --launcher pytorch --amp')
    assert launch(PYTHON='mine').startswith('MINE -m torch.distributed.run')
    shutil.rmtree(repo / '.venv')
    assert launch().startswith('PATH -m torch.distributed.run')
    # tools/ reached through a symlink: the interpreter path names the repository's .venv once
    # normalised, as Python finds its venv (not the symlink's parent's .venv)
    (repo / '.venv' / 'bin').mkdir(parents=True)
    (repo / '.venv' / 'bin' / 'python').write_text('#!/bin/sh\necho "$0"\n')
    (repo / '.venv' / 'bin' / 'python').chmod(0o755)
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'tools').symlink_to(repo / 'tools')
    out = subprocess.run(['bash', 'tools/dist_train.sh', 'cfg.py', '1'], cwd=other, env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert osp.normpath(out.stdout.strip()) == osp.realpath(repo / '.venv' / 'bin' / 'python')
    for gpus in ('0', 'x1', ''):  # refused before torchrun (whose answer to 0 is an AssertionError)
        out = subprocess.run(['bash', 'tools/dist_train.sh', 'cfg.py', gpus], cwd=repo, env=env,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and not out.stdout, out
        assert f"GPUS must be a positive number of processes per node, got '{gpus}'" in out.stderr


# ---- 5. tools/benchmark.py --cfg-options k=v ---------------------------------------------------
def test_benchmark_cfg_options_as_train(capsys):
    import json

    from mmengine.config import Config
    from test_benchmark import load_tool
    tool = load_tool()
    config = osp.join(ROOT, 'tests', 'data', 'toy_upernet_r18.py')
    args = tool.parse_args(['--config', config, '--sizes', '64', '--cfg-options',
                            'model.backbone.depth=34', 'model.backbone.out_indices=(0,1)',
                            'model.decode_head.channels=8'])
    assert args.cfg_options == {'model.backbone.depth': 34, 'model.backbone.out_indices': (0, 1),
                                'model.decode_head.channels': 8}
    (case,) = tool.build_cases(args)
    case = json.loads(json.dumps(case))  # as handed to the per-case process
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(case['cfg_options'])
    assert cfg.model.backbone.depth == 34 and list(cfg.model.backbone.out_indices) == [0, 1]
    assert cfg.model.decode_head.channels == 8
    with pytest.raises(SystemExit):
        tool.parse_args(['--cfg-options', 'model.backbone.depth=2'])  # no --config
    assert '--cfg-options needs --config' in capsys.readouterr().err
