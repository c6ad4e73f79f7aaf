"""tools/infer.py never overwrites an input image or one of its own paintings; tools/test.py and
tools/infer.py refuse a checkpoint that does not match the model (mmengine loads non-strictly)
and test.py refuses --tta on an instance segmentation model up front.

Checkpoints: one training iteration of each demo config by tools/train.py (the segmentation one
with mmengine's EMAHook), so what train.py saves is what must load strictly. The tools run
in-process on the toy data of tests/tools/test_tools.py.
"""
import glob
import os.path as osp
import shutil
import textwrap

import pytest
from test_tools import ROOT, _latest_log, _tool, toy_dir  # noqa: F401  (toy_dir: a fixture)

from mmvssm.mm import run_setup
from mmvssm.utils.checkpoint import CheckpointMismatchError

SEG_DEMO = osp.join(ROOT, 'configs', 'seg', 'demo', 'upernet_vim_t_toy_ade.py')
DET_DEMO = osp.join(ROOT, 'configs', 'det', 'demo', 'mask_rcnn_vim_t_fpn_toy_coco.py')
ONE_ITER = ['train_cfg.max_iters=1', 'train_cfg.val_interval=100',
            'default_hooks.checkpoint.interval=1']
ADE_VAL = 'data/toy/ade/ADEChallengeData2016/images/validation'
COCO_VAL = 'data/toy/coco/val2017'


@pytest.fixture(scope='module')
def ckpts(toy_dir):  # noqa: F811
    """{'seg': ..., 'det': ...}: checkpoints saved by tools/train.py after one iteration."""
    seg_ema = toy_dir / 'seg_ema.py'
    seg_ema.write_text(textwrap.dedent(f'''\
        _base_ = [{SEG_DEMO!r}]
        custom_hooks = [dict(type='EMAHook', momentum=0.5)]
    '''))
    train = _tool('train')
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(toy_dir)
        train.main([str(seg_ema), '--work-dir', 'ck_seg', '--cfg-options', *ONE_ITER,
                    'train_dataloader.batch_size=2'])
        train.main([DET_DEMO, '--work-dir', 'ck_det', '--cfg-options', *ONE_ITER,
                    'train_dataloader.batch_size=1'])
    return dict(seg=str(toy_dir / 'ck_seg' / 'iter_1.pth'),
                det=str(toy_dir / 'ck_det' / 'iter_1.pth'))


def _copy(src, dst):
    """Copy an image to ``dst`` (parents made); its bytes."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst.read_bytes()


def _files(folder):
    return sorted(osp.relpath(p, folder) for p in glob.glob(osp.join(folder, '**', '*.*'),
                                                             recursive=True))


# ---- 1. infer.py output paths -----------------------------------------------------------------
def test_infer_refuses_to_overwrite_an_input(toy_dir, ckpts, monkeypatch):
    """--out-dir = the image's folder: detection would write each painting over its input (the
    image given as a file; a folder argument that is --out-dir is refused as such)."""
    monkeypatch.chdir(toy_dir)
    img = toy_dir / 'overwrite' / 'img.jpg'
    before = _copy(toy_dir / COCO_VAL / '000000000001.jpg', img)
    with pytest.raises(ValueError, match='would overwrite the input image'):
        _tool('infer').main([DET_DEMO, ckpts['det'], str(img), '--out-dir',
                             str(img.parent), '--score-thr', '0'])
    with pytest.raises(ValueError, match='is the input folder'):
        _tool('infer').main([DET_DEMO, ckpts['det'], str(img.parent), '--out-dir',
                             str(img.parent), '--score-thr', '0'])
    assert img.read_bytes() == before
    assert _files(str(img.parent)) == ['img.jpg']


def test_infer_refuses_two_inputs_painted_to_one_output(toy_dir, ckpts, monkeypatch):
    """x.jpg and x.png of one folder (segmentation paints to .png); a/img.jpg and b/img.jpg given
    as files: refused before any work (no --out-dir made)."""
    monkeypatch.chdir(toy_dir)
    src = toy_dir / ADE_VAL / 'ADE_val_00000001.jpg'
    _copy(src, toy_dir / 'clash' / 'x.jpg')
    _copy(src, toy_dir / 'clash' / 'x.png')
    _copy(src, toy_dir / 'clash2' / 'a' / 'img.jpg')
    _copy(src, toy_dir / 'clash2' / 'b' / 'img.jpg')
    infer = _tool('infer')
    for inputs, hint in ((['clash'], 'they differ only in their extension .* rename one'),
                         (['clash2/a/img.jpg', 'clash2/b/img.jpg'], 'pass their common parent folder')):
        out = toy_dir / 'clash_out'
        with pytest.raises(ValueError, match=f'would both be painted to .*: {hint}'):
            infer.main([SEG_DEMO, ckpts['seg'], *inputs, '--out-dir', str(out)])
        assert not out.exists()


def test_infer_keeps_relative_paths_and_skips_out_dir(toy_dir, ckpts, monkeypatch):
    """a/img.jpg and b/img.jpg under a folder: painted to <out>/a/img.png and <out>/b/img.png; an
    --out-dir inside the input folder is not read back as input by a second run."""
    monkeypatch.chdir(toy_dir)
    src = toy_dir / ADE_VAL / 'ADE_val_00000001.jpg'
    _copy(src, toy_dir / 'tree' / 'a' / 'img.jpg')
    _copy(src, toy_dir / 'tree' / 'b' / 'img.jpg')
    out = toy_dir / 'tree' / 'vis'
    infer = _tool('infer')
    for _ in range(2):
        outs = infer.main([SEG_DEMO, ckpts['seg'], 'tree', '--out-dir', str(out)])
        assert sorted(osp.relpath(p, out) for p in outs) == ['a/img.png', 'b/img.png']
    assert _files(str(toy_dir / 'tree')) == ['a/img.jpg', 'b/img.jpg', 'vis/a/img.png',
                                             'vis/b/img.png']
    with pytest.raises(ValueError, match='is the input folder'):  # paintings beside the images
        infer.main([SEG_DEMO, ckpts['seg'], 'tree/a', '--out-dir', 'tree/a'])
    assert _files(str(toy_dir / 'tree' / 'a')) == ['img.jpg']


# ---- 2. strict checkpoints ---------------------------------------------------------------------
def test_train_checkpoints_load_strictly(toy_dir, ckpts, monkeypatch):
    """What train.py saved (with EMA for segmentation) tests without a mismatch, also as a bare
    state dict with DDP's ``module.`` prefix; the plain demo config reads the EMA checkpoint."""
    import torch
    monkeypatch.chdir(toy_dir)
    test = _tool('test')
    test.main([SEG_DEMO, ckpts['seg'], '--work-dir', 'strict_seg'])
    assert 'mIoU' in _latest_log('strict_seg')
    run_setup.check_checkpoint(_cfg(DET_DEMO), ckpts['det'])
    ck = torch.load(ckpts['seg'], map_location='cpu')
    assert 'ema_state_dict' in ck
    torch.save({'module.' + k: v for k, v in ck['state_dict'].items()}, 'bare_module.pth')
    run_setup.check_checkpoint(_cfg(SEG_DEMO), 'bare_module.pth')


def _cfg(path):
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    run_setup.setup_scope(cfg)
    run_setup.adapt_to_device(cfg)
    return cfg


def test_mismatched_checkpoint_is_refused(toy_dir, ckpts, monkeypatch):
    """A Mask R-CNN checkpoint for UperNet: test.py / infer.py fail before any metric (and test.py
    before the work dir is written), naming a few missing and unexpected keys; --non-strict
    runs anyway. Another num_classes: the shape mismatch named."""
    monkeypatch.chdir(toy_dir)
    test, infer = _tool('test'), _tool('infer')
    with pytest.raises(CheckpointMismatchError) as e:
        test.main([SEG_DEMO, ckpts['det'], '--work-dir', 'wrong_seg'])
    msg = str(e.value)
    assert ckpts['det'] in msg and 'missing in the checkpoint' in msg and 'not in the model' in msg
    assert 'rpn_head.' in msg and 'more)' in msg and len(msg) < 3000  # a few keys named
    assert '--non-strict' in msg
    assert not (toy_dir / 'wrong_seg').exists()

    with pytest.raises(CheckpointMismatchError, match='missing in the checkpoint'):
        infer.main([DET_DEMO, ckpts['seg'], COCO_VAL, '--out-dir', 'wrong_vis'])
    assert not (toy_dir / 'wrong_vis').exists()

    with pytest.raises(CheckpointMismatchError, match=r'shape mismatch \(2\): '
                       r'decode_head.conv_seg.weight \(checkpoint \[5, 64, 1, 1\], model \[7'):
        test.main([SEG_DEMO, ckpts['seg'], '--work-dir', 'wrong_seg',
                   '--cfg-options', 'model.decode_head.num_classes=7'])

    test.main([SEG_DEMO, ckpts['det'], '--work-dir', 'wrong_seg', '--non-strict'])
    assert 'mIoU' in _latest_log('wrong_seg')


# ---- 3. --tta on Mask R-CNN --------------------------------------------------------------------
def test_tta_refuses_instance_segmentation(toy_dir, ckpts, monkeypatch):
    monkeypatch.chdir(toy_dir)
    with pytest.raises(RuntimeError, match=r'instance segmentation.*model\.roi_head\.mask_head'):
        _tool('test').main([DET_DEMO, ckpts['det'], '--tta', '--work-dir', 'tta_det'])
    assert not (toy_dir / 'tta_det').exists()
