"""``tools/dist_train.sh CONFIG 2`` on a CPU: 2 processes (torch.distributed, gloo), and the
same result as 1 process with the same global batch.

What "same" means here: the exact seg config (tests/e2e/configs/upernet_vim_exact.py) is
deterministic per sample and has no per-process batch statistics (GroupNorm, no dropout / drop
path, fixed resize), and mmengine's InfiniteSampler with a fixed seed hands process r the samples
r, r+2, ... of the same shuffled stream. So 2 processes x batch 1 and 1 process x batch 2 see the
same global batches and DDP's averaged gradient equals the single-process gradient of the mean
loss. They differ only by float32 summation order (gradient all-reduce, per-sample vs batched
kernels). After 4 AdamW steps every parameter agrees to within 2e-4 absolute (measured: 1.5e-6;
one Adam step moves a weight by up to ~lr = 1e-3, so a data-order or averaging bug shows up at
~1e-3 or more), and the model differs from its initial weights by far more than that.
"""
import os.path as osp
import socket

import torch

import e2e_util as U

ITERS = 4
SHORT = [f'train_cfg.max_iters={ITERS}', f'default_hooks.checkpoint.interval={ITERS}']


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _weights(path):
    return U.load_ckpt(path)['state_dict']


def test_two_processes_match_one(toy_root):
    one, two = toy_root / 'dist_1proc', toy_root / 'dist_2proc'
    U.tool('train.py', U.SEG_EXACT, '--work-dir', one, '--cfg-options', *SHORT,
           'train_dataloader.batch_size=2', cwd=toy_root)
    proc = U.run(['bash', osp.join(U.TOOLS, 'dist_train.sh'), U.SEG_EXACT, '2',
                  '--work-dir', two, '--cfg-options', *SHORT, 'train_dataloader.batch_size=1'],
                 cwd=toy_root, env=U.tool_env(PYTHON=U.PY, PORT=_free_port()))
    assert 'gloo' in proc.stdout or torch.cuda.is_available()
    # mmengine's environment report: a distributed run over 2 processes
    assert 'Distributed training: True' in proc.stdout, proc.stdout[-3000:]
    assert 'GPU number: 2' in proc.stdout, proc.stdout[-3000:]
    init = _weights(U.save_initial_checkpoint(U.SEG_EXACT, toy_root / 'dist_init', toy_root))
    w1 = _weights(osp.join(one, f'iter_{ITERS}.pth'))
    w2 = _weights(osp.join(two, f'iter_{ITERS}.pth'))
    assert w1.keys() == w2.keys()
    diff = max((w1[k].float() - w2[k].float()).abs().max().item() for k in w1)
    moved = max((w1[k].float() - init[k].float()).abs().max().item() for k in w1)
    print(f'max |w(1 proc) - w(2 procs)| = {diff:.3g}; max |w - w_init| = {moved:.3g}')
    assert moved > 1e-3
    assert diff < 2e-4, diff
