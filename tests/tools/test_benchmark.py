"""tools/benchmark.py: a tiny sweep end to end (table, JSON, PNG), checkpointing comparison,
profiling, and the reporting helpers on synthetic results."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / 'tools' / 'benchmark.py'
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def load_tool():
    spec = importlib.util.spec_from_file_location('mmvssm_benchmark_tool', TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_tool(*args, timeout=240):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    r = subprocess.run([sys.executable, str(TOOL), '--no-progress', '--threads', '1', *args],
                       capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    assert r.returncode == 0, f'benchmark failed ({r.returncode}):\n{r.stdout}\n{r.stderr}'
    return r


def test_tiny_sweep_writes_table_json_png(tmp_path):
    """One run: Vim-T (tiny) + its baseline DeiT-T at two sizes, inference and a training step
    with and without checkpointing; table, JSON and PNG written."""
    out_json, out_md, out_png = tmp_path / 'b.json', tmp_path / 'b.md', tmp_path / 'b.png'
    r = run_tool('--models', 'vim_t', '--tiny', '--sizes', '64', '64x96', '--warmup', '1',
                 '--repeats', '1', '--mode', 'both', '--compare-checkpointing',
                 '--json', str(out_json), '--markdown', str(out_md), '--plot', str(out_png))

    data = json.loads(out_json.read_text())
    env, results = data['environment'], data['results']
    assert env['torch'] and env['threads'] == 1 and 'benchmark.py' in env['command']
    # each case measured in its own process
    expected = sorted((m, s, mode, cp) for m in ('vim_t', 'deit_t') for s in ((64, 64), (64, 96))
                      for mode, cp in (('infer', False), ('train', False), ('train', True)))
    assert sorted((x['model'], tuple(x['size']), x['mode'], x['with_cp'])
                  for x in results) == expected
    for x in results:
        assert x['status'] == 'ok', x
        assert x['latency_ms'] > 0 and x['throughput'] > 0 and len(x['times_ms']) == 1
        assert x['peak_rss_mb'] >= x['rss_import_mb'] > 0
        assert x['peak_increment_mb'] >= 0 and x['params_m'] > 0
    vim96 = next(x for x in results if x['model'] == 'vim_t' and x['size'] == [64, 96])
    assert vim96['out_shapes'][0][2:] == [4, 6]  # stride-16 maps of a 64x96 input

    md = out_md.read_text()
    assert '| Vim-T (tiny) | 64x96 | infer | fp32 |' in md
    assert '| Vim-T (tiny) | 64x96 | train +cp | fp32 |' in md
    row = next(ln for ln in md.splitlines() if ln.startswith('| Vim-T (tiny) | 64 | infer'))
    assert row.endswith('| DeiT-T (tiny) |') and row.count('x |') == 2  # ratios vs baseline
    assert sum(ln.startswith('|') for ln in md.splitlines()) >= 2 + 12
    assert 'Activation checkpointing' in md and '| Vim-T (tiny) | 64x96 | fp32 |' in md
    assert '| Model | Size |' in r.stdout  # also printed

    png = out_png.read_bytes()
    assert png[:8] == PNG_MAGIC
    from matplotlib import image
    img = image.imread(str(out_png))
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100

    # --append: measured cases are kept and not rerun
    tool = load_tool()
    args = tool.parse_args(['--models', 'vim_t', '--tiny', '--sizes', '64', '64x96', '--mode',
                            'both', '--compare-checkpointing', '--threads', '1', '--repeats',
                            '1', '--json', str(out_json), '--append'])
    cases = tool.build_cases(args)
    assert len(cases) == 12
    again = tool.run_sweep(args, cases, results, lambda res: None)
    assert again == results


def test_profile_prints_top_ops(tmp_path, capsys):
    tool = load_tool()
    args = tool.parse_args(['--profile', '--models', 'vim_t', '--no-baselines', '--tiny',
                            '--sizes', '32', '--profile-top', '5', '--threads', '1'])
    import torch
    n = torch.get_num_threads()
    try:
        text = tool.profile_cases(args, tool.build_cases(args))
    finally:
        torch.set_num_threads(n)
    out = capsys.readouterr().out
    assert '== profile: Vim-T (tiny) 32 infer fp32' in out and 'Self CPU' in out
    assert 'Self CPU' in text


# ----- reporting on synthetic results (no processes) --------------------------------------------

def fake(model, size, lat, inc, **kw):
    r = dict(model=model, size=list(size), mode='infer', dtype='fp32', with_cp=False,
             device='cpu', batch=1, tiny=False, threads=2, status='ok', latency_ms=lat,
             throughput=1e3 / lat, peak_rss_mb=inc + 500.0, rss_import_mb=500.0,
             peak_increment_mb=inc)
    r.update(kw)
    return r


def test_ratios_against_baseline_and_checkpointing_table():
    tool = load_tool()
    results = [fake('vim_s', (512, 2048), 700., 800.), fake('deit_s', (512, 2048), 1000., 1600.),
               fake('vim_s', (1024, 1024), 300., 400.),  # no baseline at this size
               fake('vssm_t', (800, 1280), 900., 500.), fake('swin_t', (800, 1280), 600., 250.),
               fake('vssm_t', (1024, 1024), 5000., 4000., mode='train'),
               fake('vssm_t', (1024, 1024), 6000., 1000., mode='train', with_cp=True),
               dict(fake('deit_t', (1248, 1248), 1., 0.), status='timeout', error='too slow')]
    table = tool.markdown_table(results)
    row = next(ln for ln in table.splitlines() if ln.startswith('| Vim-S | 512x2048'))
    assert '| 0.70x |' in row and '| 0.50x |' in row and row.endswith('| DeiT-S |')
    row = next(ln for ln in table.splitlines() if ln.startswith('| VSSM-T | 800x1280'))
    assert '| 1.50x |' in row and '| 2.00x |' in row
    assert 'timeout' in table
    cp = tool.checkpointing_table(results)
    row = next(ln for ln in cp.splitlines() if ln.startswith('| VSSM-T | 1024'))
    assert '| 75.0% |' in row and '| 1.20x |' in row


def test_sizes_and_default_cases():
    tool = load_tool()
    assert tool.parse_size('800x1280') == (800, 1280) and tool.parse_size('224') == (224, 224)
    args = tool.parse_args([])
    cases = tool.build_cases(args)
    models = {c['model'] for c in cases}
    assert models == {'vim_t', 'vim_s', 'vssm_t', 'mambaout_t', 'deit_t', 'deit_s', 'swin_t'}
    assert {tuple(c['size']) for c in cases} == {
        (224, 224), (512, 512), (738, 738), (1024, 1024), (1248, 1248), (800, 1280), (512, 2048)}
    for flag in ('--repeats', '--warmup', '--batch', '--threads'):  # before any case runs
        with pytest.raises(SystemExit):
            tool.parse_args([flag, '0'])
    cp = tool.parse_args(['--compare-checkpointing'])
    cases = tool.build_cases(cp)
    assert {(c['model'], tuple(c['size']), c['mode'], c['with_cp']) for c in cases} == {
        (m, (1024, 1024), 'train', w) for m in ('vim_s', 'vssm_t') for w in (False, True)}


@pytest.mark.parametrize('name', ['deit_t', 'swin_t'])
def test_baselines_accept_any_size(name):
    """timm baselines run at sizes that are not multiples of the patch / window."""
    import torch
    tool = load_tool()
    model = tool.build_model(name, tiny=True).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 74, 130))
    assert len(outs) == 4 and all(o.dim() == 4 for o in outs)


def test_case_key_tells_cfg_options_apart():
    """``--append`` skips only the cases already measured with the same ``--cfg-options``."""
    bench = load_tool()
    case = dict(config='c.py', size=[512, 512], mode='infer', dtype='fp32', device='cpu')
    a = dict(case, cfg_options={'model.backbone.depth': 2})
    b = dict(case, cfg_options={'model.backbone.depth': 3})
    assert bench.case_key(a) != bench.case_key(b) != bench.case_key(case)
    assert bench.case_key(a) == bench.case_key(dict(a, cfg_options={'model.backbone.depth': 2}))
