"""Checkpoints are written atomically: a failure or a kill while saving never leaves a corrupt
or dangling "latest" checkpoint (mmvssm.mm.atomic_checkpoint).

The kill test runs a small mmengine Runner (a linear model, no mmdet / mmseg: fast) in a
subprocess whose ``os.replace`` hangs while the checkpoint of iteration 3 is being moved into place
(i.e. the file is fully written to its temporary name), SIGKILLs it there, and checks that
``last_checkpoint`` still names the complete checkpoint of iteration 2, which loads (torch's
default ``weights_only=True``) and resumes. ``max_keep_ckpts=1`` is the worst case for mmengine's
own ``CheckpointHook``, which deletes the previous checkpoint *before* writing the new one: the
same kill (during its in-place write) leaves a truncated file and, as the control case shows, no
loadable checkpoint.
"""
import errno
import os
import os.path as osp
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

pytest.importorskip('mmengine')
import mmvssm  # noqa: F401,E402  (allow-list for torch.load(weights_only=True))

MODEL = textwrap.dedent('''
    import os, time
    import torch, torch.nn as nn
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Lin(BaseModel):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 1)
        def forward(self, x, y, mode='tensor'):
            out = self.lin(x)
            return dict(loss=((out - y) ** 2).mean()) if mode == 'loss' else out

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 64
        def __getitem__(self, i):
            x = torch.randn(4, generator=torch.Generator().manual_seed(i))
            return dict(x=x, y=x.sum(0, keepdim=True))

    def make_runner(work_dir, max_iters, resume=False, **hook):
        """A Runner of Lin with a checkpoint hook (interval 1, by iteration, **hook)."""
        return Runner(
            model=Lin(), work_dir=str(work_dir),
            experiment_name=f'{os.path.basename(work_dir)}_{time.time()}',
            train_dataloader=dict(dataset=Data(), sampler=dict(type='DefaultSampler', shuffle=True),
                                  batch_size=8, collate_fn=dict(type='default_collate')),
            optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
            train_cfg=dict(by_epoch=False, max_iters=max_iters),
            default_hooks=dict(checkpoint=dict(interval=1, by_epoch=False, **hook)),
            randomness=dict(seed=0), resume=resume)
''')

SCRIPT = MODEL + textwrap.dedent('''
    import sys
    import mmvssm  # registers AtomicCheckpointHook, the 'atomic_local' backend, safe globals

    work_dir, hook, hang_at, resume = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == '1'

    def hang(what):
        open(os.path.join(work_dir, 'HANGING'), 'w').close()
        print('hanging in', what, flush=True)
        time.sleep(600)

    if hang_at:
        target = f'iter_{hang_at}.pth'
        if hook == 'AtomicCheckpointHook':
            replace = os.replace
            def slow_replace(src, dst, *a, **k):
                if str(dst).endswith(target):
                    hang('os.replace')
                return replace(src, dst, *a, **k)
            os.replace = slow_replace
        else:  # mmengine's in-place write: half the bytes, then hang
            from mmengine.fileio.backends import LocalBackend
            put = LocalBackend.put
            def slow_put(self, obj, filepath):
                if str(filepath).endswith(target):
                    with open(filepath, 'wb') as f:
                        f.write(obj[:len(obj) // 2]); f.flush()
                    hang('LocalBackend.put')
                return put(self, obj, filepath)
            LocalBackend.put = slow_put

    runner = make_runner(work_dir, 6, resume, type=hook, max_keep_ckpts=1)
    runner.train()
    print('finished at iter', runner.iter, flush=True)
''')


def _start(tmp_path, work_dir, hook, hang_at, resume=False):
    script = tmp_path / 'run_lin.py'
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    return subprocess.Popen([sys.executable, str(script), str(work_dir), hook, str(hang_at),
                             '1' if resume else '0'], cwd=str(tmp_path), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill_while_saving(tmp_path, work_dir, hook):
    proc = _start(tmp_path, work_dir, hook, hang_at=3)
    deadline = time.time() + 300
    while not (work_dir / 'HANGING').exists():
        if proc.poll() is not None:
            pytest.fail(f'run ended ({proc.returncode}) before saving iter 3:\n'
                        f'{proc.stdout.read()[-3000:]}')
        assert time.time() < deadline, 'timeout waiting for the save of iter 3'
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    proc.stdout.close()


def test_kill_during_save_keeps_previous_checkpoint(tmp_path):
    work = tmp_path / 'atomic'
    _kill_while_saving(tmp_path, work, 'AtomicCheckpointHook')
    latest = (work / 'last_checkpoint').read_text().strip()
    assert osp.basename(latest) == 'iter_2.pth'
    assert not (work / 'iter_3.pth').exists()  # never a partial file under a checkpoint name
    ckpt = torch.load(latest, map_location='cpu')  # weights_only default + allow-list
    assert ckpt['meta']['iter'] == 2
    # and training resumes from it
    proc = _start(tmp_path, work, 'AtomicCheckpointHook', hang_at=0, resume=True)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert 'resumed epoch: 0, iter: 2' in out and 'finished at iter 6' in out, out[-3000:]
    assert osp.basename((work / 'last_checkpoint').read_text().strip()) == 'iter_6.pth'
    assert sorted(p.name for p in work.glob('iter_*.pth')) == ['iter_6.pth']  # max_keep_ckpts


def test_control_plain_checkpoint_hook_is_not_crash_safe(tmp_path):
    """Why the hook exists: mmengine's CheckpointHook, killed the same way, leaves nothing
    loadable (the previous checkpoint is already deleted, the new one is truncated)."""
    work = tmp_path / 'plain'
    _kill_while_saving(tmp_path, work, 'CheckpointHook')
    latest = (work / 'last_checkpoint').read_text().strip()
    assert osp.basename(latest) == 'iter_2.pth'
    assert not osp.exists(latest)  # deleted before iter 3 was written
    with pytest.raises(Exception):
        torch.load(str(work / 'iter_3.pth'), map_location='cpu')


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    from mmvssm.mm import atomic_checkpoint as ac
    target = tmp_path / 'iter_1.pth'
    ac.atomic_write(b'old complete checkpoint', str(target))

    def enospc(fd):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(ac.os, 'fsync', enospc)
    with pytest.raises(OSError, match='No space left'):
        ac.atomic_write(b'new' * 1000, str(target))
    assert target.read_bytes() == b'old complete checkpoint'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['iter_1.pth']  # temp file removed


def test_backend_and_hook_registered(tmp_path):
    import mmvssm  # noqa: F401
    from mmengine.fileio import get_file_backend
    from mmengine.registry import HOOKS
    from mmvssm.mm.atomic_checkpoint import AtomicCheckpointHook, AtomicLocalBackend
    backend = get_file_backend(str(tmp_path), backend_args=dict(backend='atomic_local'))
    assert isinstance(backend, AtomicLocalBackend)
    backend.put(b'abc', str(tmp_path / 'sub' / 'a.bin'))
    backend.put_text('last', str(tmp_path / 'last_checkpoint'))
    assert (tmp_path / 'sub' / 'a.bin').read_bytes() == b'abc'
    assert (tmp_path / 'last_checkpoint').read_text() == 'last'
    assert HOOKS.get('AtomicCheckpointHook') is AtomicCheckpointHook
    for scope in ('mmdet', 'mmseg'):
        mod = pytest.importorskip(f'{scope}.registry')
        assert mod.HOOKS.get('AtomicCheckpointHook') is AtomicCheckpointHook


# ---- in-process runs of the same model -------------------------------------------------------
def _runner(work_dir, max_iters, resume=False, **hook):
    """MODEL's runner, in this process, with AtomicCheckpointHook(**hook)."""
    ns = {}
    exec(MODEL, ns)
    return ns['make_runner'](work_dir, max_iters, resume, type='AtomicCheckpointHook', **hook)


def _hook(runner):
    from mmvssm.mm.atomic_checkpoint import AtomicCheckpointHook
    (hook,) = [h for h in runner.hooks if isinstance(h, AtomicCheckpointHook)]
    return hook


def test_failed_best_save_keeps_previous_best(tmp_path, monkeypatch):
    """mmengine removes the previous best checkpoint before writing the new one; the hook only
    after it, so a save that fails (here ENOSPC) keeps the previous best."""
    from mmvssm.mm import atomic_checkpoint as ac
    work = tmp_path / 'best'
    runner = _runner(work, max_iters=2, save_best='score', rule='greater')
    runner.train()
    hook = _hook(runner)
    hook._save_best_checkpoint(runner, {'score': 1.0})
    first = work / 'best_score_iter_2.pth'
    assert hook.best_ckpt_path == str(first) and first.is_file()

    replace = os.replace

    def full(src, dst):
        if 'best_score' in str(dst):
            raise OSError(errno.ENOSPC, 'No space left on device')
        return replace(src, dst)

    runner.train_loop._iter = 3  # a later evaluation
    with monkeypatch.context() as m:
        m.setattr(ac.os, 'replace', full)
        with pytest.raises(OSError, match='No space left'):
            hook._save_best_checkpoint(runner, {'score': 2.0})
    assert torch.load(str(first), map_location='cpu')['meta']['iter'] == 2
    assert hook.best_ckpt_path == str(first)  # and the hook still knows it as the best
    assert runner.message_hub.get_info('best_score') == 1.0
    runner.train_loop._iter = 4
    hook._save_best_checkpoint(runner, {'score': 3.0})
    assert sorted(p.name for p in work.glob('best_*')) == ['best_score_iter_4.pth']


def test_resume_removes_a_checkpoint_a_kill_left_beyond_max_keep(tmp_path):
    """The latest checkpoint lists the one it replaces in keep_ckpt_ids, so if a kill comes
    between writing the pointer and removing that one, --resume removes it (mmengine trims
    keep_ckpt_ids to max_keep_ckpts in before_train)."""
    work = tmp_path / 'keep'
    _runner(work, max_iters=3, max_keep_ckpts=1).train()
    assert sorted(p.name for p in work.glob('iter_*.pth')) == ['iter_3.pth']
    hub = torch.load(str(work / 'iter_3.pth'), map_location='cpu')['message_hub']
    assert hub['runtime_info']['keep_ckpt_ids'] == [2, 3]
    (work / 'iter_2.pth').write_bytes(b'left by a kill before its removal')
    _runner(work, max_iters=4, resume=True, max_keep_ckpts=1).train()
    assert sorted(p.name for p in work.glob('iter_*.pth')) == ['iter_4.pth']


def test_published_checkpoint_is_written_atomically(tmp_path, monkeypatch):
    """mmengine's _publish_model saves without the hook's backend: a plain in-place write."""
    from mmengine.fileio.backends import LocalBackend

    def in_place(self, obj, filepath):
        raise AssertionError(f'in-place write of {filepath}')

    monkeypatch.setattr(LocalBackend, 'put', in_place)
    work = tmp_path / 'pub'
    _runner(work, max_iters=2, published_keys=['meta', 'state_dict'], save_last=True).train()
    (published,) = work.glob('iter_2-*.pth')
    assert sorted(torch.load(str(published), map_location='cpu')) == ['meta', 'state_dict']


@pytest.mark.parametrize('umask, mode', [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_mode_follows_umask(tmp_path, umask, mode):
    from mmvssm.mm.atomic_checkpoint import atomic_write
    old = os.umask(umask)
    try:
        atomic_write(b'x', str(tmp_path / 'c.pth'))
    finally:
        os.umask(old)
    assert (tmp_path / 'c.pth').stat().st_mode & 0o777 == mode
