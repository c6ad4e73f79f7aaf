"""Bad input on the train / test path: each a clear error naming the file, and an existing work
dir keeps its contents (mmvssm.mm.preflight, called by tools/train.py and tools/test.py before
the runner is built; data errors while loading named by ``explain_data_errors``).

The tools run in-process (their ``main(argv)``; no mmdet / mmseg import per case).
"""
import importlib.util
import json
import os.path as osp
import shutil

import pytest

import e2e_util as U


def _tool(name):
    spec = importlib.util.spec_from_file_location(f'_e2e_tool_{name}',
                                                  osp.join(U.TOOLS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Result:
    def __init__(self, exc):
        self.returncode = 1 if exc is not None else 0
        self.exc = exc
        self.stdout = f'{type(exc).__name__}: {exc}' if exc is not None else ''


def _main(name, *argv, cwd, monkeypatch):
    """Run ``tools/<name>.py`` in-process in ``cwd``; the raised exception as a result."""
    monkeypatch.chdir(cwd)
    try:
        _tool(name).main([str(a) for a in argv])
    except Exception as e:  # noqa: BLE001  (the error is what is tested)
        return _Result(e)
    return _Result(None)


@pytest.fixture
def work_dir(tmp_path):
    """A work dir from an earlier run: its files must survive a failing command."""
    w = tmp_path / 'work'
    w.mkdir()
    (w / 'iter_4.pth').write_bytes(b'earlier checkpoint')
    (w / 'last_checkpoint').write_text(str(w / 'iter_4.pth'))
    (w / 'notes.txt').write_text('keep me')
    return w


def _unchanged(w, allow_new_log_dir=False):
    assert (w / 'iter_4.pth').read_bytes() == b'earlier checkpoint'
    assert (w / 'notes.txt').read_text() == 'keep me'
    assert (w / 'last_checkpoint').read_text() == str(w / 'iter_4.pth')
    extra = sorted(p.name for p in w.iterdir()) != ['iter_4.pth', 'last_checkpoint', 'notes.txt']
    assert allow_new_log_dir or not extra, sorted(p.name for p in w.iterdir())


def _fails(proc, *needles):
    assert proc.returncode != 0, 'no error'
    for n in needles:
        assert str(n) in proc.stdout, (n, proc.stdout[-3000:])


def _copy_toy(toy_root, dst, kind):
    shutil.copytree(toy_root / 'data' / 'toy' / kind, dst / 'data' / 'toy' / kind)


def test_missing_data_root(tmp_path, work_dir, monkeypatch):
    proc = _main('train', U.SEG_DEMO, '--work-dir', work_dir, cwd=tmp_path,
                 monkeypatch=monkeypatch)
    _fails(proc, 'PreflightError', 'data root not found',
           tmp_path / 'data' / 'toy' / 'ade' / 'ADEChallengeData2016')
    _unchanged(work_dir)


def test_missing_checkpoint(toy_root, work_dir, monkeypatch):
    missing = toy_root / 'no_such_dir' / 'iter_99.pth'
    proc = _main('test', U.SEG_DEMO, missing, '--work-dir', work_dir, cwd=toy_root,
                 monkeypatch=monkeypatch)
    _fails(proc, 'PreflightError', 'checkpoint not found', missing)
    _unchanged(work_dir)
    proc = _main('train', U.SEG_DEMO, '--work-dir', work_dir, '--cfg-options',
                 f'load_from={missing}', cwd=toy_root, monkeypatch=monkeypatch)
    _fails(proc, 'PreflightError', 'load_from: checkpoint not found', missing)
    _unchanged(work_dir)


def test_wrong_annotation_schema(toy_root, tmp_path, work_dir, monkeypatch):
    _copy_toy(toy_root, tmp_path, 'coco')
    ann = tmp_path / 'data' / 'toy' / 'coco' / 'annotations' / 'instances_train2017.json'
    data = json.loads(ann.read_text())
    data['imgs'] = data.pop('images')  # e.g. a hand-written converter with the wrong key
    ann.write_text(json.dumps(data))
    proc = _main('train', U.DET_DEMO, '--work-dir', work_dir, cwd=tmp_path,
                 monkeypatch=monkeypatch)
    _fails(proc, 'PreflightError', "lacks the COCO key(s) ['images']", ann)
    _unchanged(work_dir)


def test_corrupt_image(toy_root, tmp_path, work_dir, monkeypatch):
    _copy_toy(toy_root, tmp_path, 'ade')
    img = (tmp_path / 'data' / 'toy' / 'ade' / 'ADEChallengeData2016' / 'images' / 'training' /
           'ADE_train_00000001.jpg')
    img.write_bytes(b'')  # e.g. an interrupted download (OpenCV's own error names no file)
    proc = _main('train', U.SEG_DEMO, '--work-dir', work_dir, '--cfg-options',
                 'train_dataloader.sampler.shuffle=False', 'train_cfg.max_iters=1',
                 cwd=tmp_path, monkeypatch=monkeypatch)
    _fails(proc, 'DataLoadError', 'LoadImageFromFile failed on', img)
    _unchanged(work_dir, allow_new_log_dir=True)  # the runner's log of the failed run is added


# ---- preflight / explain_data_errors in-process (no tools) ------------------------------------
def test_coco_schema_checks(tmp_path):
    from mmvssm.mm.preflight import check_coco_json
    f = tmp_path / 'a.json'
    good = dict(images=[dict(id=1, file_name='a.jpg', width=4, height=4)],
                annotations=[dict(id=1, image_id=1, category_id=1, bbox=[0, 0, 1, 1])],
                categories=[dict(id=1, name='ring')])
    f.write_text(json.dumps(good))
    assert check_coco_json(str(f), ['ring']) == []
    assert 'none of the config classes' in check_coco_json(str(f), ['car'])[0]
    bad = dict(good, annotations=[dict(id=1, image_id=1, bbox=[0, 0, 1, 1])])
    f.write_text(json.dumps(bad))
    assert "lacks ['category_id']" in check_coco_json(str(f))[0]
    f.write_text('[1, 2]')
    assert 'not a COCO object' in check_coco_json(str(f))[0]
    f.write_text('{"images": ')
    assert 'not valid JSON' in check_coco_json(str(f))[0]
    f.write_text('')
    assert 'empty' in check_coco_json(str(f))[0]


def test_preflight_init_cfg_checkpoint(tmp_path):
    from mmengine.config import Config
    from mmvssm.mm.preflight import PreflightError, preflight
    cfg = Config(dict(
        model=dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='nope.pth')),
                   neck=dict(init_cfg=dict(type='Pretrained', checkpoint='https://x/y.pth'))),
        train_dataloader=dict(dataset=dict(data_root=str(tmp_path)))))
    with pytest.raises(PreflightError) as e:
        preflight(cfg, 'train')
    assert e.value.problems == [
        f'model.backbone.init_cfg.checkpoint: checkpoint not found: {osp.abspath("nope.pth")}']


def test_explain_data_errors_names_files(tmp_path):
    from mmcv.transforms import LoadImageFromFile
    from mmengine.dataset import Compose
    from mmvssm.mm.preflight import DataLoadError, explain_data_errors
    explain_data_errors()
    explain_data_errors()  # idempotent
    img = tmp_path / 'broken.jpg'
    img.write_bytes(b'')
    with pytest.raises(DataLoadError, match=r'LoadImageFromFile failed on img_path=.*broken\.jpg'):
        Compose([LoadImageFromFile()])(dict(img_path=str(img)))
    assert Compose([lambda d: dict(d, ok=1)])(dict(img_path='x')) == dict(img_path='x', ok=1)
