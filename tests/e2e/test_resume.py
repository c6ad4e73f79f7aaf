"""Kill-and-resume: a training run SIGKILLed after a checkpoint and restarted with ``--resume``
continues from that checkpoint with the same iteration counter, lr schedule and data order.

Reference: the same config run without interruption. Config: tests/e2e/configs/
upernet_vim_exact.py (deterministic per sample, no stochastic layers), 12 iterations, a checkpoint
every 4 (``AtomicCheckpointHook``, ``max_keep_ckpts=1``), a log record every iteration. The
resumed run must log iteration ``ckpt + 1`` first; its lr equals the reference's at every
iteration (to 1e-9 relative: the schedule is a pure function of the iteration), and its loss
equals the reference's to 1e-4 relative (measured: bit-identical, and so are the final weights;
a data order restarted from the beginning, or a lost optimizer state, changes the loss by
percents).
"""
import os
import os.path as osp
import signal
import subprocess
import time

import pytest

import e2e_util as U


def _by_iter(records):
    return {r['iter']: r for r in records}


def test_kill_and_resume(toy_root):
    ref, work = toy_root / 'resume_ref', toy_root / 'resume_killed'
    U.tool('train.py', U.SEG_EXACT, '--work-dir', ref, cwd=toy_root)
    ref_log = _by_iter(U.scalars(ref)[-1])
    assert sorted(ref_log) == list(range(1, 13))

    proc = subprocess.Popen([U.PY, osp.join(U.TOOLS, 'train.py'), U.SEG_EXACT,
                             '--work-dir', str(work)], cwd=str(toy_root), env=U.tool_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointer = work / 'last_checkpoint'
    deadline = time.time() + 600
    while not pointer.exists():
        if proc.poll() is not None:
            pytest.fail(f'training exited ({proc.returncode}) before writing a checkpoint')
        if time.time() > deadline:
            proc.kill()
            pytest.fail('no checkpoint after 600 s')
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    ckpt = pointer.read_text().strip()
    ckpt_iter = int(osp.basename(ckpt)[len('iter_'):-len('.pth')])
    assert ckpt_iter in (4, 8), ckpt
    assert ckpt_iter < 12  # killed mid-way
    # the checkpoint loads with torch's default weights_only=True (+ mmvssm's allow-list)
    meta = U.load_ckpt(ckpt)['meta']
    assert meta['iter'] == ckpt_iter

    proc = U.tool('train.py', U.SEG_EXACT, '--work-dir', work, '--resume', cwd=toy_root)
    assert f'resumed epoch: 0, iter: {ckpt_iter}' in proc.stdout, proc.stdout[-3000:]
    resumed = U.scalars(work)[-1]
    assert resumed[0]['iter'] == ckpt_iter + 1, [r['iter'] for r in resumed]
    assert [r['iter'] for r in resumed] == list(range(ckpt_iter + 1, 13))
    for r in resumed:
        want = ref_log[r['iter']]
        assert r['lr'] == pytest.approx(want['lr'], rel=1e-9), (r, want)
        assert r['loss'] == pytest.approx(want['loss'], rel=1e-4), (r, want)
    w_ref = U.load_ckpt(osp.join(ref, 'iter_12.pth'))['state_dict']
    w_res = U.load_ckpt(osp.join(work, 'iter_12.pth'))['state_dict']
    diff = max((w_ref[k] - w_res[k]).abs().max().item() for k in w_ref)
    print(f'resumed from iter {ckpt_iter}; max |w_ref - w_resumed| at iter 12 = {diff:.3g}')
    assert diff < 1e-4
