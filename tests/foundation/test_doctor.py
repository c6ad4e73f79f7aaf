"""The doctor command reports versions, scan backends and known-bad combinations."""
import subprocess
import sys
from importlib import metadata

from mmvssm.env import known_problems


def test_doctor_runs_and_reports_versions():
    r = subprocess.run([sys.executable, '-m', 'mmvssm.env'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f'torch: {metadata.version("torch")}' in out
    for pkg in ('mmengine', 'mmcv', 'mmdet', 'mmsegmentation', 'timm'):
        try:
            assert f'{pkg}: {metadata.version(pkg)}' in out
        except metadata.PackageNotFoundError:
            assert f'{pkg}: not installed' in out
    assert 'mamba-ssm:' in out and 'mmcv ops:' in out
    assert 'selective_scan backend ref: usable' in out
    assert 'selective_scan backend cuda:' in out


def test_known_bad_combinations_each_warn_with_a_fix():
    v = {'mmcv': '2.2.0', 'mmdet': '3.3.0', 'mmsegmentation': '1.2.2', 'numpy': '2.0.1',
         'torch': '2.1.0', 'mmcv-lite': '2.1.0', 'setuptools': '81.0.0'}
    warns = known_problems(v, ops_ok=False, ops_reason='No module named mmcv._ext')
    text = '\n'.join(warns)
    assert 'mmcv-lite' in text and 'mmcv._ext' in text
    assert 'mmdet 3.3' in text and 'mmseg 1.2' in text
    assert "numpy<2" in text
    assert all('Fix:' in w for w in warns)
    good = {'mmcv': '2.1.0', 'mmdet': '3.3.0', 'numpy': '2.4.0', 'torch': '2.14.1', 'setuptools': '80.0'}
    assert known_problems(good, ops_ok=True, ops_reason='') == []
