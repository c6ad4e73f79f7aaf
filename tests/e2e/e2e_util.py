"""Helpers of the end-to-end tests: run the tools in subprocesses, read their logs and metrics.

Each tool runs with ``cwd`` = a temporary folder holding ``data/toy`` (the demo configs use the
relative data roots ``data/toy/...``) and absolute config / tool paths, like a user would.
"""
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import textwrap

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOLS = osp.join(REPO, 'tools')
SEG_DEMO = osp.join(REPO, 'configs', 'seg', 'demo', 'upernet_vim_t_toy_ade.py')
SEG_DEMO_MAMBAOUT = osp.join(REPO, 'configs', 'seg', 'demo', 'upernet_mambaout_t_toy_ade.py')
DET_DEMO = osp.join(REPO, 'configs', 'det', 'demo', 'mask_rcnn_vim_t_fpn_toy_coco.py')
SEG_EXACT = osp.join(REPO, 'tests', 'e2e', 'configs', 'upernet_vim_exact.py')
PY = sys.executable


def tool_env(**extra):
    env = dict(os.environ)
    env.setdefault('PYTHONWARNINGS', 'ignore')
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(args, cwd, timeout=900, check=True, env=None):
    """Run a command; on failure (with ``check``) raise with the tail of its output."""
    proc = subprocess.run(args, cwd=str(cwd), env=env or tool_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{" ".join(map(str, args))} exited {proc.returncode}:\n'
                             f'{proc.stdout[-6000:]}')
    return proc


def tool(name, *args, cwd, **kw):
    return run([PY, osp.join(TOOLS, name), *map(str, args)], cwd=cwd, **kw)


def make_toy(root, num_train=None, num_val=None):
    args = ['--out', osp.join(str(root), 'data', 'toy')]
    if num_train is not None:
        args += ['--num-train', num_train]
    if num_val is not None:
        args += ['--num-val', num_val]
    tool('make_toy_data.py', *args, cwd=root)
    return root


def scalars(work_dir):
    """Per-iteration training records (``vis_data/scalars.json``) of every run in ``work_dir``,
    oldest run first: a list (one per run) of lists of dicts with 'iter', 'lr', 'loss', ..."""
    runs = []
    for f in sorted(glob.glob(osp.join(str(work_dir), '*', 'vis_data', 'scalars.json'))):
        with open(f) as fh:
            recs = [json.loads(line) for line in fh if line.strip()]
        runs.append([r for r in recs if 'loss' in r])
    return runs


def test_metrics(work_dir):
    """The metrics ``tools/test.py`` logged last under ``work_dir`` (``<ts>/<ts>.json``)."""
    files = sorted(glob.glob(osp.join(str(work_dir), '*', '*.json')), key=osp.getmtime)
    assert files, f'no metrics json under {work_dir}'
    with open(files[-1]) as f:
        return json.loads(f.read().strip().splitlines()[-1])


_INIT_CKPT = textwrap.dedent('''
    from mmvssm.mm import run_setup as tools
    from mmengine.config import Config
    cfg = Config.fromfile({config!r})
    tools.setup_scope(cfg)
    cfg.work_dir = {work_dir!r}
    tools.adapt_to_device(cfg)
    runner = tools.build_runner(cfg)
    # what Runner.train() builds before it initializes the weights, in its order: the train loop's
    # dataloader iterator draws its base seed from torch's global RNG, so skipping it would give
    # another random init than the training run's
    runner._train_loop = runner.build_train_loop(runner._train_loop)
    runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    if runner.param_schedulers is not None:
        runner.param_schedulers = runner.build_param_scheduler(runner.param_schedulers)
    if runner._val_loop is not None:
        runner._val_loop = runner.build_val_loop(runner._val_loop)
    runner._init_model_weights()
    runner.save_checkpoint({work_dir!r}, 'iter_0.pth', save_optimizer=False,
                           save_param_scheduler=False, by_epoch=False)
''')


def save_initial_checkpoint(config, work_dir, cwd):
    """The model a training run of ``config`` starts from (same seed), saved as iter_0.pth."""
    code = _INIT_CKPT.format(config=str(config), work_dir=str(work_dir))
    run([PY, '-c', code], cwd=cwd)
    return osp.join(str(work_dir), 'iter_0.pth')


def load_ckpt(path):
    """``torch.load`` with torch's default ``weights_only=True``: mmengine checkpoints need
    mmvssm's allow-list (HistoryBuffer, numpy), registered by ``import mmvssm``."""
    import mmvssm  # noqa: F401
    import torch
    return torch.load(str(path), map_location='cpu')
