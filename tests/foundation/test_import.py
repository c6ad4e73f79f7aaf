"""``import mmvssm`` works without mmdet / mmseg / mamba-ssm / CUDA, and never imports them."""
import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent('''
    import sys
    class _Block:
        BLOCKED = {BLOCKED}
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in self.BLOCKED:
                raise ImportError(f'{{name}} blocked by test')
            return None
    sys.meta_path.insert(0, _Block())
''')


def _run(code, blocked):
    src = BLOCKER.format(BLOCKED=repr(set(blocked))) + textwrap.dedent(code)
    return subprocess.run([sys.executable, '-c', src], capture_output=True, text=True, timeout=300)


def test_import_without_openmmlab_task_packages_or_mamba():
    r = _run('''
        import mmvssm, sys
        bad = [m for m in ('mmdet', 'mmseg', 'mamba_ssm', 'selective_scan_cuda', 'causal_conv1d')
               if m in sys.modules]
        assert not bad, bad
        import torch
        assert not torch.cuda.is_initialized()
        print('ok', mmvssm.__version__)
    ''', ['mmdet', 'mmseg', 'mamba_ssm', 'selective_scan_cuda', 'causal_conv1d'])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('ok')


def test_import_with_torch_only():
    r = _run('''
        import mmvssm, sys
        assert 'mmengine' not in sys.modules and 'mmcv' not in sys.modules
        print('ok')
    ''', ['mmdet', 'mmseg', 'mamba_ssm', 'selective_scan_cuda', 'mmengine', 'mmcv', 'timm'])
    assert r.returncode == 0, r.stderr
