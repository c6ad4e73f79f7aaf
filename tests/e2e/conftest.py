"""Shared, session-scoped runs of the end-to-end tests (each trained once, used by several tests).

Everything runs on the CPU in temporary folders; the toy data is generated once per session.
Iteration counts are the smallest that show learning clearly on 2 cores (see the tests).
"""
import os.path as osp

import pytest

import e2e_util as U

pytest.importorskip('mmseg')
pytest.importorskip('mmdet')

#: short training runs (iterations; the demo configs' schedules are cut to these)
SEG_ITERS = 60
DET_ITERS = 200


@pytest.fixture(scope='session')
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('e2e')
    U.make_toy(root)
    return root


def _short(iters, log_every):
    return ['--cfg-options', f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
            f'param_scheduler.1.end={iters}', f'default_hooks.checkpoint.interval={iters}',
            f'default_hooks.logger.interval={log_every}']


def _train_and_eval(config, root, name, iters, log_every, test_args=()):
    work = root / name
    U.tool('train.py', config, '--work-dir', work, *_short(iters, log_every), cwd=root)
    ckpt = osp.join(str(work), f'iter_{iters}.pth')
    U.tool('test.py', config, ckpt, '--work-dir', work / 'test_trained', *test_args, cwd=root)
    init = U.save_initial_checkpoint(config, root / f'{name}_init', cwd=root)
    U.tool('test.py', config, init, '--work-dir', work / 'test_untrained', *test_args,
           cwd=root)
    return dict(work_dir=work, ckpt=ckpt, init_ckpt=init, log=U.scalars(work)[-1],
                trained=U.test_metrics(work / 'test_trained'),
                untrained=U.test_metrics(work / 'test_untrained'))


@pytest.fixture(scope='session')
def seg_run(toy_root):
    return _train_and_eval(U.SEG_DEMO, toy_root, 'seg', SEG_ITERS, 5)


@pytest.fixture(scope='session')
def det_run(toy_root):
    # + average recall: after a short run from scratch Mask R-CNN localises before it ranks well
    return _train_and_eval(U.DET_DEMO, toy_root, 'det', DET_ITERS, 5, test_args=(
        '--cfg-options', "test_evaluator.metric_items=['mAP','mAP_50','AR@100']"))
