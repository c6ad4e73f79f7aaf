"""tools/benchmark_scan.py: a quick run times each backend against ref in fresh workers and writes the table."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, 'tools', 'benchmark_scan.py')


def _run(*args, timeout=600):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_quick_run_table(tmp_path):
    md, js = tmp_path / 'scan.md', tmp_path / 'scan.json'
    r = _run('--quick', '--cases', 'vmamba-t-s1', '--modes', 'fwd', '--backends', 'torch', '--min-time', '0',
             '--min-reps', '2', '--threads', '1', '--markdown', str(md), '--json', str(js))
    assert r.returncode == 0, r.stdout + r.stderr
    text = md.read_text()
    assert text.startswith('# Selective-scan benchmark\n\n`python tools/benchmark_scan.py --quick')
    assert '| threads 1 |' in text  # what the workers ran with, not the driver's default
    rows = [line for line in text.splitlines() if line.startswith('| VMamba-T')]
    assert len(rows) == 2  # ref, then torch
    for row, backend in zip(rows, ('ref', 'torch')):
        cells = [c.strip() for c in row.strip('|').split('|')]
        assert cells[0] == 'VMamba-T stage 1 --quick (1, 384, 4000, 1) G=4'  # the size that ran
        assert cells[1] == 'fwd' and cells[2] == backend
        assert float(cells[3]) > 0 and int(cells[5]) >= 2
        assert cells[6].endswith('x') and float(cells[6][:-1]) > 0
    assert rows[0].split('|')[7].strip() == '1.0x'
    assert js.exists()


@pytest.mark.parametrize('args,needle', [
    (('--min-reps', '0'), '--min-reps must be at least 1'),
    (('--threads', '-1'), '--threads must be >= 0'),
    (('--backends', 'cpus'), "invalid choice: 'cpus'"),
    (('--markdown', '/nonexistent-folder/x.md'), "cannot write '/nonexistent-folder/x.md'"),
])
def test_bad_arguments_fail_before_running(args, needle):
    r = _run(*args, timeout=120)
    assert r.returncode == 2 and needle in r.stderr, r.stderr
