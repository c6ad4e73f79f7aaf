"""EvalProgressBarHook: a bar over the val / test iterations of a real mmengine Runner.

A toy model and dataset (no mmdet / mmseg) run through ``Runner.val()`` / ``Runner.test()``;
the hook writes to a ``StringIO`` in line mode (log files, pipes) and in terminal mode.
"""
import io
import os.path as osp
import re

import pytest
import torch

pytest.importorskip('mmengine')
from mmengine.evaluator import BaseMetric  # noqa: E402
from mmengine.model import BaseModel  # noqa: E402
from mmengine.registry import HOOKS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmvssm  # noqa: F401,E402  (registers the hook)
from mmvssm.mm.hooks import EvalProgressBarHook  # noqa: E402


class _Model(BaseModel):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.lin(torch.stack(inputs) if isinstance(inputs, list) else inputs)
        if mode == 'loss':
            return dict(loss=out.abs().mean())
        return [dict(pred=o) for o in out]


class _Metric(BaseMetric):
    def process(self, data_batch, data_samples):
        self.results.extend(float(s['pred']) for s in data_samples)

    def compute_metrics(self, results):
        return dict(n=len(results))


def _runner(tmp_path, n_items, hook, logger_interval=50):
    data = [dict(inputs=torch.randn(2)) for _ in range(n_items)]
    loader = dict(dataset=data, sampler=dict(type='DefaultSampler', shuffle=False),
                  batch_size=1, collate_fn=dict(type='default_collate'))
    return Runner(
        model=_Model(), work_dir=str(tmp_path),
        val_dataloader=loader, val_cfg=dict(), val_evaluator=[_Metric()],
        test_dataloader=loader, test_cfg=dict(), test_evaluator=[_Metric()],
        default_hooks=dict(logger=dict(type='LoggerHook', interval=logger_interval)),
        custom_hooks=[hook], experiment_name=f'bar_{id(hook)}')


def test_registered_in_mmengine_hooks():
    assert HOOKS.get('EvalProgressBarHook') is EvalProgressBarHook
    for scope in ('mmdet', 'mmseg'):  # children of mmengine's HOOKS look it up there
        child = pytest.importorskip(f'{scope}.registry').HOOKS
        assert child.get('EvalProgressBarHook') is EvalProgressBarHook


def test_line_mode_through_runner_test_and_val(tmp_path):
    out = io.StringIO()
    runner = _runner(tmp_path, 20, EvalProgressBarHook(tty=False, stream=out))
    assert runner.test() == dict(n=20)
    lines = out.getvalue().splitlines()
    # 0 %, every 10 % (2 iterations), and the last line says the metrics come next
    counts = [int(re.search(r' (\d+)/20 ', ln).group(1)) for ln in lines]
    assert counts == list(range(0, 21, 2)), lines
    assert all(ln.startswith('test [') for ln in lines)
    assert lines[0].startswith('test [--------------------]  0/20    0%')
    assert lines[-1].startswith('test [####################] 20/20  100%')
    assert lines[-1].endswith('computing metrics') and '\r' not in out.getvalue()

    out.truncate(0)
    out.seek(0)
    runner.val()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith('val [') and lines[-1].startswith('val [####################] 20/20')


def test_terminal_mode_redraws_in_place_and_yields_to_the_logger(tmp_path):
    out = io.StringIO()
    runner = _runner(tmp_path, 6, EvalProgressBarHook(tty=True, min_interval=0, stream=out),
                     logger_interval=4)
    runner.test()
    text = out.getvalue()
    draws = [d for d in text.split('\r') if d]
    assert len(draws) == 7  # 0/6 .. 6/6, every iteration with min_interval=0
    assert all(d.startswith('test [') for d in draws)
    # the LoggerHook logs iteration 4: that bar line is ended before the logger writes
    assert re.search(r' 4/6 .*\x1b\[K\n$', draws[4]) and draws[4].count('\n') == 1
    assert draws[-1].endswith('computing metrics\x1b[K\n')
    assert sum(d.count('\n') for d in draws) == 2


def test_only_main_process_draws(tmp_path, monkeypatch):
    import mmvssm.mm.hooks as hooks
    monkeypatch.setattr(hooks, 'is_main_process', lambda: False)
    out = io.StringIO()
    _runner(tmp_path, 3, EvalProgressBarHook(tty=False, stream=out)).test()
    assert out.getvalue() == ''


def test_default_stream_is_stderr_at_write_time(tmp_path, capsys):
    _runner(tmp_path, 2, EvalProgressBarHook()).val()
    err = capsys.readouterr().err
    assert 'val [' in err and '2/2' in err  # not a TTY under pytest: plain lines


def test_shared_base_configs_enable_it():
    pytest.importorskip('mmdet')
    pytest.importorskip('mmseg')
    from mmengine.config import Config
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    for rel in ('configs/_base_/det/mask_rcnn_fpn_1x_coco.py',
                'configs/_base_/seg/upernet_160k_ade20k.py'):
        cfg = Config.fromfile(osp.join(root, rel))
        assert dict(type='EvalProgressBarHook') in cfg.custom_hooks, rel
