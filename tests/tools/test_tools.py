"""Smoke tests of tools/train.py, tools/test.py, tools/infer.py and tools/dist_train.sh on CPU.

Tiny ResNet-18 configs (tests/data/toy_*.py, built on the shared configs/_base_ files) train for a
couple of iterations on the toy COCO / ADE20K data of mmvssm/datasets/toy.py. The tools run
in-process (their ``main(argv)``) to avoid paying the mmdet/mmseg import per call; the
distributed launcher runs as a real 2-process torchrun job with the gloo backend.
"""
import glob
import importlib.util
import os
import os.path as osp
import pickle
import socket
import subprocess
import sys

import pytest

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

from mmvssm.mm import run_setup  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET_CFG = osp.join(ROOT, 'tests', 'data', 'toy_mask_rcnn_r18_fpn.py')
SEG_CFG = osp.join(ROOT, 'tests', 'data', 'toy_upernet_r18.py')
NO_VAL = ['--cfg-options', 'train_cfg.val_interval=100']


def _tool(name):
    spec = importlib.util.spec_from_file_location(
        f'_mmvssm_test_tool_{name}', osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def toy_dir(tmp_path_factory):
    """A folder holding data/toy/{coco,ade} (4 train + 2 val images each)."""
    from mmvssm.datasets.toy import make_ade, make_coco
    root = tmp_path_factory.mktemp('tools')
    out = str(root / 'data' / 'toy')
    make_coco(out, num_train=4, num_val=2)
    make_ade(out, num_train=4, num_val=2)
    return root


def _latest_log(work_dir):
    logs = sorted(glob.glob(osp.join(work_dir, '*', '*.log')))
    assert logs, f'no log in {work_dir}'
    with open(logs[-1]) as f:
        return f.read()


def test_det_train_resume_test_infer(toy_dir, monkeypatch):
    monkeypatch.chdir(toy_dir)
    train, test, infer = _tool('train'), _tool('test'), _tool('infer')
    wd = str(toy_dir / 'wd_det')

    train.main([DET_CFG, '--work-dir', wd] + NO_VAL)
    assert osp.isfile(osp.join(wd, 'epoch_1.pth'))

    # --resume (auto): picks up epoch_1 and trains the second epoch only
    train.main([DET_CFG, '--work-dir', wd, '--resume', '--cfg-options',
                'train_cfg.max_epochs=2', 'train_cfg.val_interval=100'])
    log = _latest_log(wd)
    assert 'resumed epoch: 1' in log and 'Epoch(train) [2]' in log and 'Epoch(train) [1]' not in log
    assert osp.isfile(osp.join(wd, 'epoch_2.pth'))

    # test: COCO metrics, raw predictions dumped, painted images
    twd = str(toy_dir / 'wd_det_test')
    test.main([DET_CFG, osp.join(wd, 'epoch_2.pth'), '--work-dir', twd,
               '--out', osp.join(twd, 'preds.pkl'), '--show-dir', 'vis'])
    with open(osp.join(twd, 'preds.pkl'), 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 2 and 'pred_instances' in preds[0]
    assert 'coco/bbox_mAP' in _latest_log(twd)
    assert len(glob.glob(osp.join(twd, '*', 'vis', '*.jpg'))) == 2

    # infer: a folder of images; an unreachable Pretrained init_cfg must not be touched
    cfg = toy_dir / 'det_pretrained.py'
    cfg.write_text(f"_base_ = [{DET_CFG!r}]\n"
                   "model = dict(backbone=dict(init_cfg=dict(\n"
                   "    _delete_=True, type='Pretrained',\n"
                   "    checkpoint='https://invalid.example/x.pth')))\n")
    out_dir = str(toy_dir / 'infer_det')
    outs = infer.main([str(cfg), osp.join(wd, 'epoch_2.pth'), 'data/toy/coco/val2017',
                       '--out-dir', out_dir, '--score-thr', '0'])
    assert len(outs) == 2 and all(osp.getsize(p) > 0 for p in outs)


def test_seg_train_test_infer(toy_dir, monkeypatch):
    monkeypatch.chdir(toy_dir)
    train, test, infer = _tool('train'), _tool('test'), _tool('infer')
    wd = str(toy_dir / 'wd_seg')
    train.main([SEG_CFG, '--work-dir', wd, '--cfg-options', 'train_cfg.max_iters=2',
                'train_cfg.val_interval=100'])
    ckpt = osp.join(wd, 'iter_2.pth')
    assert osp.isfile(ckpt)
    with open(osp.join(wd, osp.basename(SEG_CFG))) as f:  # the config as run
        assert 'SyncBN' not in f.read()  # the CPU path swapped SyncBN for BN (no CUDA here)

    twd = str(toy_dir / 'wd_seg_test')
    out, show = str(toy_dir / 'seg_pred'), str(toy_dir / 'seg_vis')
    test.main([SEG_CFG, ckpt, '--work-dir', twd, '--out', out, '--show-dir', show])
    assert 'mIoU' in _latest_log(twd)
    assert len(glob.glob(osp.join(out, '*.png'))) == 2
    assert len(glob.glob(osp.join(show, '**', '*.png'), recursive=True)) == 2

    img = 'data/toy/ade/ADEChallengeData2016/images/validation/ADE_val_00000001.jpg'
    outs = infer.main([SEG_CFG, ckpt, img, '--out-dir', str(toy_dir / 'infer_seg')])
    assert [osp.basename(p) for p in outs] == ['ADE_val_00000001.png']
    assert osp.getsize(outs[0]) > 0


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.skipif(sys.platform != 'linux', reason='bash launcher')
def test_dist_train_two_cpu_processes(toy_dir):
    """tools/dist_train.sh: 2 processes, gloo backend, SyncBN swapped for BN, DDP on CPU."""
    import torch
    if torch.cuda.is_available():
        pytest.skip('checks the CPU (gloo) path')
    wd = str(toy_dir / 'wd_dist')
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(_free_port()), OMP_NUM_THREADS='1')
    res = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), SEG_CFG, '2', '--work-dir', wd,
         '--cfg-options', 'train_cfg.max_iters=2', 'train_cfg.val_interval=100'],
        cwd=str(toy_dir), env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert osp.isfile(osp.join(wd, 'iter_2.pth'))
    assert 'distributed training on CPU with gloo' in res.stdout + res.stderr
    log = _latest_log(wd)
    assert "'backend': 'gloo'" in log and 'GPU number: 2' in log


def test_unknown_scope_is_refused(tmp_path):
    from mmengine.config import Config
    f = tmp_path / 'cfg.py'
    f.write_text("model = dict(type='X')\n")
    with pytest.raises(ValueError, match='default_scope'):
        run_setup.setup_scope(Config.fromfile(str(f)))


def test_adapt_to_device_swaps_sync_bn(tmp_path, monkeypatch):
    import torch
    from mmengine.config import Config
    f = tmp_path / 'cfg.py'
    f.write_text("norm_cfg = dict(type='SyncBN', requires_grad=True)\n"
                 "model = dict(neck=[dict(type='A', norm_cfg=norm_cfg)],\n"
                 "             head=dict(norm_cfg=dict(type='MMSyncBN')),\n"
                 "             aux=dict(norm_cfg=dict(type='SyncBatchNorm')))\n"
                 "env_cfg = dict(cudnn_benchmark=True, dist_cfg=dict(backend='nccl'))\n")
    cfg = Config.fromfile(str(f))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    run_setup.adapt_to_device(cfg)
    assert cfg.model.neck[0].norm_cfg.type == 'SyncBN'  # untouched with CUDA
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    run_setup.adapt_to_device(cfg)
    assert cfg.model.neck[0].norm_cfg.type == 'BN' and cfg.model.head.norm_cfg.type == 'BN'
    assert cfg.model.aux.norm_cfg.type == 'BN'  # nn.SyncBatchNorm's name (mmcv, adapters)
    assert cfg.env_cfg.cudnn_benchmark is False
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'  # single process: no process group
    with pytest.raises(RuntimeError, match='pytorch'):
        run_setup.adapt_to_device(cfg, launcher='slurm')


def test_close_distributed_destroys_the_process_group(tmp_path):
    """train.py / test.py end a distributed run by destroying its process group (a 1-process gloo
    group here); without one, close_distributed does nothing."""
    import torch.distributed as dist
    run_setup.close_distributed()  # no group: a no-op
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)
    try:
        assert dist.is_initialized()
        run_setup.close_distributed()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
