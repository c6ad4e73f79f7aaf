"""Environment doctor: ``python -m mmvssm.env``.

Prints the versions of the stack, which selective-scan backends work here and which one a call picks
(``MMVSSM_SCAN_BACKEND`` included), and one ``WARN`` line (with the fix) for every known-bad
combination. Exit code 0 unless ``--strict`` is given and a warning was printed.
"""
import argparse
import importlib.util
import os
import platform
import sys
from importlib import metadata
from typing import Dict, List, Optional, Tuple

PACKAGES = ('torch', 'torchvision', 'numpy', 'setuptools', 'mmengine', 'mmcv', 'mmcv-lite', 'mmdet',
            'mmsegmentation', 'timm', 'pycocotools', 'mamba-ssm', 'causal-conv1d')


def _version(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _vtuple(v: Optional[str]) -> Tuple[int, ...]:
    out = []
    for part in (v or '0').split('+')[0].split('.'):
        digits = ''.join(c for c in part if c.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def mmcv_ops_status() -> Tuple[bool, str]:
    """Whether ``mmcv._ext`` (compiled ops) imports."""
    if _version('mmcv') is None:
        return False, 'mmcv not installed'
    try:
        import mmcv.ops  # noqa: F401
        from mmcv.utils import ext_loader
        ext_loader.load_ext('_ext', ['nms'])
    except Exception as e:  # report any failure: this is a diagnostic
        return False, f'{type(e).__name__}: {e}'.splitlines()[0][:200]
    return True, 'compiled ops import'


def scan_backends() -> Dict[str, Tuple[bool, str]]:
    """Selective-scan backends usable here (from :func:`mmvssm.ops.available_backends`)."""
    from mmvssm.ops import available_backends
    return available_backends()


def scan_env_problems(environ) -> List[str]:
    """``WARN`` messages for the scan's environment variables (``MMVSSM_SCAN_BACKEND``, ``MMVSSM_TORCH_SOFTPLUS``)."""
    from mmvssm.ops import BACKENDS, ENV_VAR
    from mmvssm.ops.scan_torch import SOFTPLUS_ENV, SOFTPLUS_FORMULAS
    warns = []
    backend = (environ.get(ENV_VAR) or '').strip().lower()
    if backend and backend not in BACKENDS + ('auto',):
        warns.append(f'{ENV_VAR}={environ[ENV_VAR]!r} is not a backend: every selective_scan call raises. '
                     f'Fix: unset it, or set one of {BACKENDS} or "auto"')
    elif backend == 'ref':
        warns.append(f'{ENV_VAR}=ref: every scan runs the sequential reference loop (100-1000x slower, for '
                     'tests). Fix: unset it')
    softplus = environ.get(SOFTPLUS_ENV, '')
    if softplus and softplus not in SOFTPLUS_FORMULAS:
        warns.append(f'{SOFTPLUS_ENV}={softplus!r} is not a formula: every torch-backend scan with softplus '
                     f'raises. Fix: unset it (timed once per process), or set one of {SOFTPLUS_FORMULAS}')
    return warns


def scan_selection(cuda: bool) -> Dict[str, str]:
    """The backend ``selective_scan`` picks for CPU (and CUDA) tensors here, or why it cannot pick one."""
    import warnings
    from mmvssm.ops import resolve_backend
    out = {}
    for device in ('cpu', 'cuda') if cuda else ('cpu',):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            try:
                name = resolve_backend(None, device)
            except (ValueError, RuntimeError) as e:
                out[device] = f'none ({e})'
                continue
        out[device] = name + ''.join(f' (warning: {w.message})' for w in caught)
    return out


def selection_problems(selection: Dict[str, str], env_warns: List[str]) -> List[str]:
    """``WARN`` messages for devices whose tensors no backend can scan (e.g.
    ``MMVSSM_SCAN_BACKEND=cuda`` on a machine without CUDA), unless ``env_warns`` already says
    the variable names no backend."""
    from mmvssm.ops import ENV_VAR
    if any(w.startswith(f'{ENV_VAR}=') for w in env_warns):
        return []
    return [f'selective_scan cannot run on {device.upper()} tensors: {picked[len("none ("):-1]}. '
            f'Fix: unset {ENV_VAR} (automatic choice), or set a backend listed as usable above'
            for device, picked in selection.items() if picked.startswith('none (')]


def known_problems(versions: Dict[str, Optional[str]], ops_ok: bool, ops_reason: str) -> List[str]:
    """One ``WARN`` message (problem + fix) per known-bad combination."""
    warns = []
    if versions.get('mmcv-lite'):
        warns.append('mmcv-lite is installed: it has no compiled ops (RoIAlign, NMS) that Mask R-CNN '
                      'needs. Fix: pip uninstall -y mmcv-lite && bash tools/setup_env.sh')
    if versions.get('mmcv') and not ops_ok:
        warns.append(f'mmcv {versions["mmcv"]} has no usable compiled ops ({ops_reason}). Fix: rebuild '
                     'it against this torch with ops: bash tools/setup_env.sh (MMCV_WITH_OPS=1, cached wheel)')
    mmcv_v = _vtuple(versions.get('mmcv'))
    if versions.get('mmcv') and mmcv_v >= (2, 2) and versions.get('mmdet') and _vtuple(versions['mmdet']) < (3, 4):
        warns.append(f'mmcv {versions["mmcv"]} with mmdet {versions["mmdet"]}: mmdet 3.3 asserts '
                     'mmcv<2.2.0 at import. Fix: install mmcv 2.1.0 (bash tools/setup_env.sh)')
    if versions.get('mmcv') and mmcv_v >= (2, 2) and versions.get('mmsegmentation') \
            and _vtuple(versions['mmsegmentation']) < (1, 3):
        warns.append(f'mmcv {versions["mmcv"]} with mmsegmentation {versions["mmsegmentation"]}: mmseg 1.2 '
                     'asserts mmcv<2.2.0 at import. Fix: install mmcv 2.1.0 (bash tools/setup_env.sh)')
    if not _has_module('pkg_resources'):
        which = (f'setuptools {versions["setuptools"]} has no pkg_resources (removed in 81)'
                 if versions.get('setuptools') else 'setuptools is not installed (no pkg_resources)')
        warns.append(f"{which}: mmcv's setup.py and mmengine's 'mmdet::' / 'mmseg::' config bases "
                     "(every shipped config) need it. Fix: pip install 'setuptools>=70,<81'")
    np_v, torch_v = _vtuple(versions.get('numpy')), _vtuple(versions.get('torch'))
    if versions.get('numpy') and np_v >= (2,) and versions.get('torch') and torch_v < (2, 3):
        warns.append(f'numpy {versions["numpy"]} with torch {versions["torch"]}: torch < 2.3 was built '
                     "against numpy 1 (tensor<->numpy breaks). Fix: pip install 'numpy<2' or torch >= 2.3")
    return warns


def notes(versions: Dict[str, Optional[str]]) -> List[str]:
    """Known problems that ``import mmvssm`` works around (printed as NOTE)."""
    out = []
    torch_v = _vtuple(versions.get('torch'))
    if versions.get('mmengine') and _vtuple(versions['mmengine']) <= (0, 10, 7) and torch_v >= (2, 6):
        out.append(f'mmengine {versions["mmengine"]} with torch {versions["torch"]}: torch.load defaults '
                     'to weights_only=True, official Vim/VMamba checkpoints pickle Namespace/CfgNode. '
                     'import mmvssm (custom_imports) registers an allow-list for them; keep it imported')
    return out


def collect() -> dict:
    versions = {p: _version(p) for p in PACKAGES}
    ops_ok, ops_reason = mmcv_ops_status()
    info = {'python': sys.version.split()[0], 'platform': platform.platform(), 'versions': versions,
            'mmcv_ops': (ops_ok, ops_reason)}
    try:
        import torch
        info['cuda'] = torch.cuda.is_available()
        info['threads'] = torch.get_num_threads()
    except ImportError:
        info['cuda'] = False
    info['warnings'] = known_problems(versions, ops_ok, ops_reason)
    try:
        import mmvssm
        from mmvssm.ops.scan_cuda import load_cuda_module
        info['mmvssm'] = mmvssm.__version__
        info['scan_backends'] = scan_backends()
        if info['cuda'] and info['scan_backends']['cuda'][0]:  # found: does it import (a GPU machine)?
            mod, reason = load_cuda_module()
            if mod is None:
                info['scan_backends']['cuda'] = (False, reason)
        info['scan_selection'] = scan_selection(info['cuda'])
        env_warns = scan_env_problems(os.environ)
        info['warnings'] += env_warns + selection_problems(info['scan_selection'], env_warns)
    except Exception as e:
        info['scan_backends'] = {'(error)': (False, f'{type(e).__name__}: {e}')}
    info['notes'] = notes(versions)
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description='mmvssm environment doctor')
    parser.add_argument('--strict', action='store_true', help='exit 1 when any WARN is printed')
    args = parser.parse_args(argv)
    info = collect()
    print(f'python: {info["python"]} ({info["platform"]})')
    print(f'mmvssm: {info.get("mmvssm", "not importable")}')
    for name, v in info['versions'].items():
        print(f'{name}: {v or "not installed"}')
    ok, reason = info['mmcv_ops']
    print(f'mmcv ops: {"yes" if ok else "no"} ({reason})')
    print(f'CUDA available: {info["cuda"]}')
    if 'threads' in info:
        print(f'torch threads: {info["threads"]}')
    for name, (usable, why) in info['scan_backends'].items():
        print(f'selective_scan backend {name}: {"usable" if usable else "unavailable"} ({why})')
    for device, name in info.get('scan_selection', {}).items():
        print(f'selective_scan on {device.upper()} tensors runs: {name}')
    for n in info['notes']:
        print(f'NOTE: {n}')
    for w in info['warnings']:
        print(f'WARN: {w}')
    return 1 if (args.strict and info['warnings']) else 0


if __name__ == '__main__':
    sys.exit(main())
