"""The doctor command reports versions, scan backends and known-bad combinations."""
import os
import subprocess
import sys
from importlib import metadata

import mmvssm.env
from mmvssm.env import known_problems, scan_env_problems, selection_problems


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
    assert 'selective_scan on CPU tensors runs: ' in out


def test_scan_environment_variables_checked():
    """A bad MMVSSM_SCAN_BACKEND / MMVSSM_TORCH_SOFTPLUS (every scan call would raise) or MMVSSM_SCAN_BACKEND=ref
    (every scan on the slow loop) is a WARN with a fix; --strict then exits 1, and the pick is printed."""
    assert scan_env_problems({}) == []
    assert scan_env_problems({'MMVSSM_SCAN_BACKEND': ' Torch ', 'MMVSSM_TORCH_SOFTPLUS': 'exp-log'}) == []
    for env, needle in (({'MMVSSM_SCAN_BACKEND': 'nope'}, 'is not a backend'),
                        ({'MMVSSM_SCAN_BACKEND': 'ref'}, 'sequential reference loop'),
                        ({'MMVSSM_TORCH_SOFTPLUS': 'fast'}, 'is not a formula')):
        (w,) = scan_env_problems(env)
        assert needle in w and 'Fix:' in w
    env = dict(os.environ, MMVSSM_SCAN_BACKEND='nope')
    r = subprocess.run([sys.executable, '-m', 'mmvssm.env', '--strict'], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "WARN: MMVSSM_SCAN_BACKEND='nope'" in r.stdout
    assert "selective_scan on CPU tensors runs: none (selective_scan: unknown backend" in r.stdout
    # a valid name no tensor here can use: every scan raises too (one WARN per device)
    picked = {'cpu': 'none (selective_scan: backend "cuda" needs CUDA tensors)', 'cuda': 'cuda'}
    (w,) = selection_problems(picked, [])
    assert w.startswith('selective_scan cannot run on CPU tensors: selective_scan: backend "cuda"')
    assert 'Fix: unset MMVSSM_SCAN_BACKEND' in w
    assert selection_problems(picked, scan_env_problems({'MMVSSM_SCAN_BACKEND': 'nope'})) == []
    assert selection_problems({'cpu': 'cpu'}, []) == []
    r = subprocess.run([sys.executable, '-m', 'mmvssm.env', '--strict'], capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, MMVSSM_SCAN_BACKEND='cuda'))
    import torch
    if not torch.cuda.is_available():
        assert r.returncode == 1 and 'WARN: selective_scan cannot run on CPU tensors' in r.stdout


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



def test_missing_pkg_resources_warns_with_or_without_setuptools(monkeypatch):
    """mmengine's 'mmdet::' / 'mmseg::' bases import pkg_resources: setuptools >= 81 and no
    setuptools at all (a plain venv) break every shipped config alike."""
    monkeypatch.setattr(mmvssm.env, '_has_module', lambda name: name != 'pkg_resources')
    for v, needle in (({'setuptools': '81.0.0'}, 'setuptools 81.0.0 has no pkg_resources'),
                      ({}, 'setuptools is not installed')):
        (w,) = known_problems(v, ops_ok=True, ops_reason='')
        assert w.startswith(needle) and "Fix: pip install 'setuptools>=70,<81'" in w
