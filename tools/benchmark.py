#!/usr/bin/env python
"""Backbone efficiency benchmark: latency, throughput and peak memory vs. input resolution.

Measures mmvssm backbones (Vim, VSSM, MambaOut, ARM) against their Transformer baselines built
from timm in the same run (DeiT-T/S/B = ``vit_*_patch16_224`` with ``dynamic_img_size=True``;
Swin-T/S/B = ``swin_*_patch4_window7_224`` with ``strict_img_size=False``), all as feature
extractors (no classifier head, random weights: nothing is downloaded), or a full det/seg model
built from a config (``--config``), over a resolution sweep.

Protocol
    * every case (model x size x mode x dtype [x checkpointing]) runs in a **fresh subprocess**:
      peak memory is the child's own high-water mark (``getrusage(RUSAGE_SELF).ru_maxrss``) on
      CPU, reported absolute and as the increment over an import-only baseline taken in the same
      child before the model is built (= weights + activations + allocator); on CUDA it is
      ``torch.cuda.max_memory_allocated`` (and ``max_memory_reserved``);
    * ``--warmup`` untimed iterations (at least 1), then ``--repeats`` timed ones; latency = median (IQR and
      min are kept in the JSON), throughput = batch / median latency;
    * CPU timing with ``time.perf_counter``; CUDA timing with CUDA events around each iteration
      and ``torch.cuda.synchronize()`` (TF32 matmuls on unless ``--no-tf32``);
    * ``infer``: ``torch.no_grad()``, ``model.eval()``; ``train``: ``model.train()``, forward,
      ``sum(out.float().mean())`` over the outputs, backward (no optimizer step);
    * ``bf16``: ``torch.autocast(device, torch.bfloat16)`` around the forward.

Examples::

    # the default sweep (Vim-T/S, VSSM-T, MambaOut-T + DeiT-T/S, Swin-T baselines), CPU fp32 infer
    python tools/benchmark.py --markdown bench.md --json bench.json --plot bench.png
    # target cases only, inference and training step, fp32 and bf16
    python tools/benchmark.py --models vim_s --sizes 512x2048 1248 --mode both --dtype fp32 bf16
    # activation checkpointing: peak-memory reduction of with_cp=True on a training step
    python tools/benchmark.py --mode train --compare-checkpointing   # Vim-S, VSSM-T at 1024
    # profile (top ops by self CPU time)
    python tools/benchmark.py --profile --models vim_s vssm_t --sizes 512x2048 --no-baselines
    # a full detector / segmentor from a config (backbone + neck [+ decode head])
    python tools/benchmark.py --config configs/seg/upernet_vim_s_ade20k.py --sizes 512x2048
    # GPU protocol (Vim paper: fp32, batch 64 where it fits)
    python tools/benchmark.py --device cuda --batch 64 --warmup 5 --repeats 30
"""
import argparse
import contextlib
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from typing import Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULT_MARK = '@@BENCH_RESULT@@'

# ----------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------

#: name -> (kind, class / timm name, arch, label, baseline name)
MODELS: Dict[str, Tuple[str, str, Optional[str], str, Optional[str]]] = {
    'vim_t': ('mmvssm', 'Vim', 'tiny', 'Vim-T', 'deit_t'),
    'vim_s': ('mmvssm', 'Vim', 'small', 'Vim-S', 'deit_s'),
    'vim_b': ('mmvssm', 'Vim', 'base', 'Vim-B', 'deit_b'),
    'vim_t_s8': ('mmvssm', 'Vim', 'tiny_s8', 'Vim-T (stride 8)', 'deit_t'),
    'vim_s_s8': ('mmvssm', 'Vim', 'small_s8', 'Vim-S (stride 8)', 'deit_s'),
    'vssm_t': ('mmvssm', 'VSSM', 'tiny', 'VSSM-T', 'swin_t'),
    'vssm_s': ('mmvssm', 'VSSM', 'small', 'VSSM-S', 'swin_s'),
    'vssm_b': ('mmvssm', 'VSSM', 'base', 'VSSM-B', 'swin_b'),
    'mambaout_t': ('mmvssm', 'MambaOut', 'tiny', 'MambaOut-T', 'swin_t'),
    'mambaout_s': ('mmvssm', 'MambaOut', 'small', 'MambaOut-S', 'swin_s'),
    'mambaout_b': ('mmvssm', 'MambaOut', 'base', 'MambaOut-B', 'swin_b'),
    'arm_b': ('mmvssm', 'ARM', 'base', 'ARM-B', 'deit_b'),
    'deit_t': ('vit', 'vit_tiny_patch16_224', None, 'DeiT-T', None),
    'deit_s': ('vit', 'vit_small_patch16_224', None, 'DeiT-S', None),
    'deit_b': ('vit', 'vit_base_patch16_224', None, 'DeiT-B', None),
    # DeiT with timm's eager attention (the L x L matrix materialized, as in the Vim paper's
    # baseline) instead of the fused scaled_dot_product_attention of the default entries
    'deit_t_eager': ('vit', 'vit_tiny_patch16_224', 'eager', 'DeiT-T (eager attn)', None),
    'deit_s_eager': ('vit', 'vit_small_patch16_224', 'eager', 'DeiT-S (eager attn)', None),
    'swin_t': ('swin', 'swin_tiny_patch4_window7_224', None, 'Swin-T', None),
    'swin_s': ('swin', 'swin_small_patch4_window7_224', None, 'Swin-S', None),
    'swin_b': ('swin', 'swin_base_patch4_window7_224', None, 'Swin-B', None),
}

#: ``--tiny``: small settings of every family (same code paths, seconds instead of minutes)
TINY_OVERRIDES = {
    'Vim': dict(embed_dim=32, depth=4, d_state=8),
    'ARM': dict(embed_dim=32, depth=4, d_state=8),
    'VSSM': dict(depths=[1, 1, 2, 1], dims=16),
    'MambaOut': dict(depths=[1, 1, 2, 1], dims=[16, 32, 48, 64]),
    'vit': dict(embed_dim=32, depth=4, num_heads=2),
    'swin': dict(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2)),
}

DEFAULT_MODELS = ['vim_t', 'vim_s', 'vssm_t', 'mambaout_t']
DEFAULT_SIZES = ['224', '512', '738', '1024', '1248', '800x1280', '512x2048']
CP_DEFAULT_MODELS = ['vim_s', 'vssm_t']
CP_DEFAULT_SIZES = ['1024']


def evenly_spaced(depth: int, n: int = 4) -> List[int]:
    """Four evenly spaced block indices ending with the last (Vim's default ``out_indices``)."""
    return sorted({max(0, (i + 1) * depth // n - 1) for i in range(n)})


class TimmFeatures:
    """Factory of an ``nn.Module`` returning the NCHW feature maps of a timm ViT / Swin."""

    @staticmethod
    def build(kind: str, name: str, tiny: bool, attn: Optional[str] = None):
        import timm
        import torch
        from torch import nn
        kw = dict(pretrained=False, num_classes=0)
        if tiny:
            kw.update(TINY_OVERRIDES[kind])
        if kind == 'vit':
            # any input size: pos-embed interpolated to the grid on each call, input padded to
            # a multiple of the patch (as mmvssm's Vim pads), no classifier head
            kw.update(dynamic_img_size=True, dynamic_img_pad=True)
        else:
            kw.update(strict_img_size=False)
        net = timm.create_model(name, **kw)
        if attn == 'eager':
            for m in net.modules():
                if hasattr(m, 'fused_attn'):
                    m.fused_attn = False

        class Features(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = net
                if kind == 'vit':
                    self.indices = evenly_spaced(len(net.blocks))
                else:
                    self.indices = list(range(len(net.layers)))

            def forward(self, x):
                if kind == 'swin':  # patch embed needs a multiple of the patch (4)
                    p = net.patch_embed.patch_size[0]
                    ph, pw = (-x.shape[2]) % p, (-x.shape[3]) % p
                    if ph or pw:
                        x = torch.nn.functional.pad(x, (0, pw, 0, ph))
                return tuple(net.forward_intermediates(
                    x, indices=self.indices, intermediates_only=True, output_fmt='NCHW'))

            def set_grad_checkpointing(self, enable=True):
                net.set_grad_checkpointing(enable)

        return Features()


def build_model(name: Optional[str], tiny: bool = False, with_cp: bool = False,
                config: Optional[str] = None, cfg_options: Optional[dict] = None):
    """The module measured for a case (a backbone, a timm feature extractor or a full model)."""
    if config:
        return build_from_config(config, cfg_options, with_cp)
    kind, cls_name, arch, _, _ = MODELS[name]
    if kind == 'mmvssm':
        from mmvssm import backbones
        cls = getattr(backbones, cls_name)
        kw = dict(TINY_OVERRIDES[cls_name]) if tiny else {}
        model = cls(arch, with_cp=with_cp, **kw)
    else:
        model = TimmFeatures.build(kind, cls_name, tiny, attn=arch)
        if with_cp:
            model.set_grad_checkpointing(True)
    return model


def build_from_config(config: str, cfg_options: Optional[dict], with_cp: bool):
    """Full model of a det/seg config through the registry; weights are never loaded."""
    import torch
    from torch import nn
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.get('custom_imports'):
        from mmengine.utils import import_modules_from_strings
        import_modules_from_strings(**cfg.custom_imports)
    import mmvssm  # noqa: F401  (registration)
    scope = cfg.get('default_scope', 'mmdet')
    if scope == 'mmseg':
        from mmseg.registry import MODELS as REG
        from mmseg.utils import register_all_modules
    else:
        from mmdet.registry import MODELS as REG
        from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    init_default_scope(scope)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.pop('pretrained', None)
    if isinstance(model_cfg.get('backbone'), dict):
        model_cfg['backbone']['init_cfg'] = None  # nothing can be downloaded; random weights
        if with_cp:
            model_cfg['backbone']['with_cp'] = True
    model = REG.build(model_cfg)
    from mmengine.model import revert_sync_batchnorm
    model = revert_sync_batchnorm(model)

    class ConfigModel(nn.Module):
        """Det: backbone + neck (``extract_feat``); seg: + decode head (``_forward``)."""

        def __init__(self):
            super().__init__()
            self.model = model
            self.is_seg = scope == 'mmseg'

        def forward(self, x):
            out = self.model._forward(x) if self.is_seg else self.model.extract_feat(x)
            if isinstance(out, torch.Tensor):
                return (out,)
            return tuple(out)

    return ConfigModel()


# ----------------------------------------------------------------------------------------------
# one case (runs in a fresh subprocess)
# ----------------------------------------------------------------------------------------------


def rss_mb() -> Optional[float]:
    """Current resident set size of this process in MiB."""
    try:
        import psutil
        return psutil.Process().memory_info().rss / 2 ** 20
    except Exception:  # pragma: no cover - psutil missing
        try:
            with open('/proc/self/statm') as f:
                return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20
        except Exception:
            return None


def maxrss_mb() -> float:
    """High-water mark of this process's RSS in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2 ** 20 if sys.platform == 'darwin' else r / 1024


def run_case(case: dict) -> dict:
    """Build the model of ``case`` and time it; returns the measurement (JSON-serializable)."""
    threads = case.get('threads')
    if case.get('allocator', 'retain') == 'retain' and case['device'] == 'cpu':
        from mmvssm.utils.malloc import retain_freed_memory
        retain_freed_memory()
    import torch
    if threads:
        torch.set_num_threads(int(threads))
    # import everything a model needs before the baseline is taken
    import timm  # noqa: F401
    if case.get('config') or MODELS.get(case.get('model'), ('',))[0] == 'mmvssm':
        import mmvssm.backbones  # noqa: F401
    device = torch.device(case['device'])
    cuda = device.type == 'cuda'
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = case.get('tf32', True)
        torch.backends.cudnn.allow_tf32 = case.get('tf32', True)
        torch.backends.cudnn.benchmark = True
        torch.cuda.init()
        torch.empty(1, device=device)  # context
    import gc
    gc.collect()
    out = dict(case)
    out.update(status='ok', rss_import_mb=rss_mb(), maxrss_import_mb=maxrss_mb())

    torch.manual_seed(0)
    model = build_model(case.get('model'), tiny=case.get('tiny', False),
                        with_cp=case.get('with_cp', False), config=case.get('config'),
                        cfg_options=case.get('cfg_options'))
    model = model.to(device)
    out['params_m'] = sum(p.numel() for p in model.parameters()) / 1e6
    out['rss_model_mb'] = rss_mb()
    train = case['mode'] == 'train'
    model.train(train)
    h, w = case['size']
    x = torch.randn(case.get('batch', 1), 3, h, w, device=device)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        out['cuda_model_mb'] = torch.cuda.memory_allocated() / 2 ** 20
    amp = (torch.autocast(device.type, dtype=torch.bfloat16) if case['dtype'] == 'bf16'
           else contextlib.nullcontext())

    def step():
        if train:
            model.zero_grad(set_to_none=True)
            with amp:
                outs = model(x)
            loss = sum(o.float().mean() for o in outs)
            loss.backward()
        else:
            with torch.no_grad(), amp:
                outs = model(x)
        return outs

    try:
        outs = step()
        out['out_shapes'] = [list(o.shape) for o in outs]
        del outs
        for _ in range(max(0, case.get('warmup', 1) - 1)):
            step()
        times = []
        for _ in range(case.get('repeats', 3)):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                start.record()
                step()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                step()
                times.append((time.perf_counter() - t0) * 1e3)
    except torch.cuda.OutOfMemoryError as e:  # type: ignore[attr-defined]
        out.update(status='oom', error=str(e).splitlines()[0])
        times = []
    except RuntimeError as e:
        msg = str(e)
        if 'out of memory' in msg.lower() or "can't allocate memory" in msg.lower() or \
                'DefaultCPUAllocator' in msg:
            out.update(status='oom', error=msg.splitlines()[0][:300])
            times = []
        else:
            raise
    if times:
        q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
        out.update(latency_ms=statistics.median(times), latency_min_ms=min(times),
                   latency_iqr_ms=q[2] - q[0], times_ms=times,
                   throughput=case.get('batch', 1) / statistics.median(times) * 1e3)
    out['peak_rss_mb'] = maxrss_mb()
    if out['rss_import_mb'] is not None:
        out['peak_increment_mb'] = out['peak_rss_mb'] - out['rss_import_mb']
    if cuda:
        out['cuda_peak_mb'] = torch.cuda.max_memory_allocated() / 2 ** 20
        out['cuda_reserved_mb'] = torch.cuda.max_memory_reserved() / 2 ** 20
    return out


def worker_main(spec: str) -> int:
    case = json.loads(spec)
    if case.get('_environment'):
        sys.stdout.write('\n' + RESULT_MARK + json.dumps(environment(case)) + '\n')
        return 0
    try:
        result = run_case(case)
    except Exception as e:  # reported, not raised: the sweep goes on
        import traceback
        result = dict(case, status='error', error=f'{type(e).__name__}: {e}'[:500],
                      traceback=traceback.format_exc()[-2000:])
    sys.stdout.write('\n' + RESULT_MARK + json.dumps(result) + '\n')
    sys.stdout.flush()
    return 0


def run_case_subprocess(case: dict, timeout: float) -> dict:
    """``--isolation exec``: a new interpreter per case (imports paid every time)."""
    env = dict(os.environ)
    if case.get('threads'):
        env['OMP_NUM_THREADS'] = str(case['threads'])
        env['MKL_NUM_THREADS'] = str(case['threads'])
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    cmd = [sys.executable, os.path.abspath(__file__), '--worker', json.dumps(case)]
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return dict(case, status='timeout', error=f'case exceeded --case-timeout {timeout:.0f} s')
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            res = json.loads(line[len(RESULT_MARK):])
            res['wall_s'] = time.time() - t0
            return res
    err = (p.stderr or p.stdout or '').strip().splitlines()[-5:]
    status = 'killed' if p.returncode < 0 else 'error'  # e.g. SIGKILL by the OOM killer
    return dict(case, status=status, error=f'worker exit {p.returncode}: ' + ' | '.join(err)[-500:])


def _forked_case(case: dict, conn) -> None:
    if case.get('_environment'):  # the environment description, from the same kind of process
        conn.send(environment(case))
        conn.close()
        return
    try:
        result = run_case(case)
    except Exception as e:  # reported, not raised: the sweep goes on
        import traceback
        result = dict(case, status='error', error=f'{type(e).__name__}: {e}'[:500],
                      traceback=traceback.format_exc()[-2000:])
    conn.send(result)
    conn.close()


_FORKSERVER = None


def forkserver_context(threads: Optional[int]):
    """A ``forkserver`` that has imported torch / timm / mmvssm once and forks a fresh child per
    case (each child is a new process: its own RSS high-water mark, allocator, thread pool; the
    server never runs a parallel region, so forking it is safe)."""
    global _FORKSERVER
    if _FORKSERVER is None:
        import multiprocessing as mp
        if threads:
            os.environ['OMP_NUM_THREADS'] = str(threads)
            os.environ['MKL_NUM_THREADS'] = str(threads)
        if ROOT not in sys.path:
            sys.path.insert(0, ROOT)
        ctx = mp.get_context('forkserver')
        ctx.set_forkserver_preload(['__main__', 'torch', 'timm', 'mmvssm.backbones'])
        _FORKSERVER = ctx
    return _FORKSERVER


def run_case_forked(case: dict, timeout: float) -> dict:
    """``--isolation forkserver`` (default): a fresh forked process per case."""
    ctx = forkserver_context(case.get('threads'))
    recv, send = ctx.Pipe(duplex=False)
    t0 = time.time()
    proc = ctx.Process(target=_forked_case, args=(case, send), daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(timeout):
            proc.kill()
            proc.join()
            return dict(case, status='timeout',
                        error=f'case exceeded --case-timeout {timeout:.0f} s')
        res = recv.recv()
    except EOFError:  # died without a result (e.g. SIGKILL by the OOM killer)
        proc.join()
        return dict(case, status='killed' if (proc.exitcode or 0) < 0 else 'error',
                    error=f'worker exit {proc.exitcode} without a result')
    proc.join()
    res['wall_s'] = time.time() - t0
    return res


# ----------------------------------------------------------------------------------------------
# sweep
# ----------------------------------------------------------------------------------------------


def parse_size(s: str) -> Tuple[int, int]:
    s = str(s).lower()
    if 'x' in s:
        h, w = s.split('x')
        return int(h), int(w)
    return int(s), int(s)


def size_str(hw: Sequence[int]) -> str:
    h, w = hw
    return str(h) if h == w else f'{h}x{w}'


def case_key(c: dict) -> tuple:
    return (c.get('model') or c.get('config'), tuple(c['size']), c['mode'], c['dtype'],
            bool(c.get('with_cp')), c['device'], c.get('batch', 1), bool(c.get('tiny')),
            c.get('threads'), json.dumps(c.get('cfg_options') or {}, sort_keys=True, default=str))


def label_of(c: dict) -> str:
    if c.get('config'):
        return os.path.splitext(os.path.basename(c['config']))[0]
    lab = MODELS[c['model']][3]
    return lab + (' (tiny)' if c.get('tiny') else '')


def baseline_of(c: dict) -> Optional[str]:
    return None if c.get('config') else MODELS[c['model']][4]


def environment(opts: dict) -> dict:
    """Machine and library description (``opts``: threads, device, no_tf32, command)."""
    import torch
    if opts.get('threads'):
        torch.set_num_threads(opts['threads'])
    info = dict(
        date_utc=datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        python=platform.python_version(), torch=torch.__version__,
        platform=platform.platform(), cpu_count=os.cpu_count(),
        threads=opts.get('threads') or torch.get_num_threads(), device=opts['device'],
        allocator=opts.get('allocator'),
        loadavg_start=os.getloadavg() if hasattr(os, 'getloadavg') else None,
        command=opts['command'])
    try:
        import timm
        info['timm'] = timm.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        info['cpu_capability'] = torch.backends.cpu.get_cpu_capability()
    except Exception:  # pragma: no cover
        pass
    try:
        info['parallel_info'] = torch.__config__.parallel_info()
    except Exception:  # pragma: no cover
        pass
    try:
        lscpu = subprocess.run(['lscpu'], capture_output=True, text=True, timeout=10).stdout
        keep = ('Model name', 'CPU(s):', 'Thread(s) per core', 'Core(s) per socket',
                'L1d cache', 'L2 cache', 'L3 cache', 'Hypervisor vendor')
        info['lscpu'] = {ln.split(':', 1)[0].strip(): ln.split(':', 1)[1].strip()
                         for ln in lscpu.splitlines() if ln.startswith(keep)}
        flags = next((ln for ln in lscpu.splitlines() if ln.startswith('Flags')), '')
        info['lscpu']['simd'] = ' '.join(f for f in flags.split()
                                         if f.startswith(('avx', 'amx', 'fma')))
    except Exception:
        pass
    try:
        with open('/proc/meminfo') as f:
            info['mem_total_gb'] = round(int(f.readline().split()[1]) / 2 ** 20, 1)
    except Exception:
        pass
    if opts['device'].startswith('cuda') and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info['gpu'] = dict(name=p.name, memory_gb=round(p.total_memory / 2 ** 30, 1),
                           cuda=torch.version.cuda, tf32=not opts.get('no_tf32'))
    return info


def build_cases(args) -> List[dict]:
    models = list(args.models or [])
    if not args.config and not args.no_baselines:
        for m in list(models):
            b = MODELS[m][4]
            if b and b not in models:
                models.append(b)
    modes = ['infer', 'train'] if args.mode == 'both' else [args.mode]
    cps = [False, True] if args.compare_checkpointing else [bool(args.with_cp)]
    base = dict(device=args.device, batch=args.batch, warmup=args.warmup, repeats=args.repeats,
                threads=args.threads, tiny=args.tiny, tf32=not args.no_tf32,
                allocator=args.allocator)
    targets = [dict(config=c) for c in args.config] if args.config else \
        [dict(model=m) for m in models]
    cases = []
    for size in args.sizes:
        for t in targets:
            for mode in modes:
                for dtype in args.dtype:
                    for cp in cps:
                        if cp and mode != 'train':
                            continue
                        c = dict(base, size=list(parse_size(size)), mode=mode, dtype=dtype,
                                 with_cp=cp, **t)
                        if args.cfg_options:
                            c['cfg_options'] = args.cfg_options
                        cases.append(c)
    return cases


@contextlib.contextmanager
def progress_bar(total: int, enabled: bool = True):
    """``update(description)`` callable driving a rich (or tqdm, or plain) progress bar."""
    if not enabled:
        yield lambda desc, advance=True: None
        return
    try:
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)
        prog = Progress(TextColumn('[bold]{task.description}'), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(),
                        console=Console(stderr=True), transient=False)
        with prog:
            task = prog.add_task('benchmark', total=total)

            def update(desc, advance=True):
                prog.update(task, description=desc, advance=1 if advance else 0)
            yield update
        return
    except ImportError:
        pass
    try:
        from tqdm import tqdm
        bar = tqdm(total=total, file=sys.stderr)

        def update(desc, advance=True):
            bar.set_description(desc)
            if advance:
                bar.update(1)
        yield update
        bar.close()
        return
    except ImportError:
        pass
    count = [0]

    def update(desc, advance=True):
        count[0] += int(advance)
        print(f'[{count[0]}/{total}] {desc}', file=sys.stderr, flush=True)
    yield update


def run_sweep(args, cases: List[dict], previous: List[dict], on_result) -> List[dict]:
    results = list(previous)
    done = {case_key(r) for r in previous if r.get('status') == 'ok'}
    todo = [c for c in cases if case_key(c) not in done]
    if len(todo) < len(cases):
        print(f'{len(cases) - len(todo)} case(s) already in {args.json}; running {len(todo)}',
              file=sys.stderr)
    with progress_bar(len(todo), not args.no_progress) as update:
        for c in todo:
            desc = (f"{label_of(c)} {size_str(c['size'])} {c['mode']} {c['dtype']}"
                    + (' cp' if c.get('with_cp') else ''))
            update(desc, advance=False)
            load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else None
            if args.isolation == 'none':
                try:
                    r = run_case(c)
                    r['peak_rss_mb'] = r['peak_increment_mb'] = None  # not isolated
                except Exception as e:
                    r = dict(c, status='error', error=f'{type(e).__name__}: {e}'[:500])
            elif args.isolation == 'exec':
                r = run_case_subprocess(c, args.case_timeout)
            else:
                r = run_case_forked(c, args.case_timeout)
            r['loadavg_1m'] = load
            results = [x for x in results if case_key(x) != case_key(c)] + [r]
            on_result(results)
            update(desc)
            if r.get('status') != 'ok':
                print(f"  {desc}: {r.get('status')}: {r.get('error')}", file=sys.stderr)
    return results


# ----------------------------------------------------------------------------------------------
# reporting
# ----------------------------------------------------------------------------------------------


def _fmt(v, nd=1):
    if v is None:
        return '-'
    if isinstance(v, float):
        return f'{v:,.{nd}f}'
    return str(v)


def _ratio(a, b, nd=2):
    if a is None or b is None or not b:
        return '-'
    return f'{a / b:.{nd}f}x'


def mem_of(r: dict) -> Optional[float]:
    """The memory figure compared between models: CUDA peak allocated, else the RSS increment."""
    if r.get('cuda_peak_mb') is not None:
        return r['cuda_peak_mb']
    return r.get('peak_increment_mb')


def find_baseline(r: dict, results: List[dict]) -> Optional[dict]:
    b = baseline_of(r)
    if not b:
        return None
    for x in results:
        if x.get('model') == b and x.get('status') == 'ok' and \
                case_key(dict(x, model=r['model'])) == case_key(r):
            return x
    return None


def sort_key(r: dict):
    h, w = r['size']
    name = r.get('model') or r.get('config')
    order = list(MODELS).index(name) if name in MODELS else -1
    return (r['mode'], r['dtype'], bool(r.get('with_cp')), h * w, h, order)


def markdown_table(results: List[dict]) -> str:
    cuda = any(r.get('device') == 'cuda' for r in results)
    mem_head = 'Peak alloc (MB)' if cuda else 'Peak RSS (MB)'
    inc_head = 'Reserved (MB)' if cuda else 'Increment (MB)'
    lines = [f'| Model | Size | Mode | Dtype | Latency (ms) | img/s | Latency vs base | '
             f'{mem_head} | {inc_head} | Memory vs base | Load | Baseline |',
             '|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|']
    for r in sorted(results, key=sort_key):
        mode = r['mode'] + (' +cp' if r.get('with_cp') else '')
        if r.get('status') != 'ok':
            lines.append(f"| {label_of(r)} | {size_str(r['size'])} | {mode} | {r['dtype']} | "
                         f"{r.get('status')} | - | - | - | - | - | - | {r.get('error', '')[:60]} |")
            continue
        b = find_baseline(r, results)
        if cuda:
            mem, inc = r.get('cuda_peak_mb'), r.get('cuda_reserved_mb')
        else:
            mem, inc = r.get('peak_rss_mb'), r.get('peak_increment_mb')
        lat_ratio = _ratio(r['latency_ms'], b['latency_ms']) if b else ''
        mem_ratio = _ratio(mem_of(r), mem_of(b)) if b else ''
        bname = label_of(b) if b else ''
        lines.append(f"| {label_of(r)} | {size_str(r['size'])} | {mode} | {r['dtype']} | "
                     f"{_fmt(r['latency_ms'])} | {_fmt(r['throughput'], 2)} | {lat_ratio} | "
                     f"{_fmt(mem, 0)} | {_fmt(inc, 0)} | {mem_ratio} | {_fmt(r.get('loadavg_1m'), 1)} | "
                     f"{bname} |")
    return '\n'.join(lines)


def checkpointing_table(results: List[dict]) -> str:
    """Peak memory / latency of train steps with and without activation checkpointing."""
    rows = []
    for r in sorted(results, key=sort_key):
        if r['mode'] != 'train' or r.get('with_cp') or r.get('status') != 'ok':
            continue
        cp = next((x for x in results if x.get('status') == 'ok' and x.get('with_cp') and
                   case_key(dict(x, with_cp=False)) == case_key(r)), None)
        if cp is None:
            continue
        m0, m1 = mem_of(r), mem_of(cp)
        red = f'{(1 - m1 / m0) * 100:.1f}%' if m0 and m1 is not None else '-'
        rows.append(f"| {label_of(r)} | {size_str(r['size'])} | {r['dtype']} | {_fmt(m0, 0)} | "
                    f"{_fmt(m1, 0)} | {red} | {_fmt(r['latency_ms'])} | {_fmt(cp['latency_ms'])} | "
                    f"{_ratio(cp['latency_ms'], r['latency_ms'])} |")
    if not rows:
        return ''
    head = ('| Model | Size | Dtype | Peak mem, no cp (MB) | Peak mem, with_cp (MB) | Reduction | '
            'Step (ms), no cp | Step (ms), with_cp | Time overhead |\n'
            '|---|---|---|---:|---:|---:|---:|---:|---:|')
    return head + '\n' + '\n'.join(rows)


def environment_md(env: dict) -> str:
    out = [f"- date: {env.get('date_utc')}; command: `{env.get('command')}`",
           f"- torch {env.get('torch')} (CPU capability {env.get('cpu_capability')}), "
           f"timm {env.get('timm')}, Python {env.get('python')}, {env.get('platform')}",
           f"- threads: {env.get('threads')} of {env.get('cpu_count')} logical CPUs; "
           f"memory {env.get('mem_total_gb')} GB; 1-min load average at start "
           f"{env.get('loadavg_start', [None])[0] if env.get('loadavg_start') else '-'}",
           f"- CPU allocator: {env.get('allocator') or 'default'} (`--allocator`, the same for "
           f"every model)"]
    if env.get('lscpu'):
        out.append('- CPU: ' + '; '.join(f'{k} {v}' for k, v in env['lscpu'].items()))
    if env.get('gpu'):
        out.append(f"- GPU: {env['gpu']}")
    return '\n'.join(out)


def write_markdown(path: str, results: List[dict], env: dict) -> None:
    cuda = any(r.get('device') == 'cuda' for r in results)
    loads = [r['loadavg_1m'] for r in results if r.get('loadavg_1m') is not None]
    parts = ['# Benchmark results', '', environment_md(env)]
    if loads:
        parts.append(f'- 1-min load average at case starts: min {min(loads):.2f}, '
                     f'max {max(loads):.2f}')
    parts += ['', markdown_table(results), '']
    if cuda:
        parts.append('Memory: `torch.cuda.max_memory_allocated` (and max reserved) during the case; '
                     'ratios use the allocated peak.')
    else:
        parts.append('Memory: peak RSS of the fresh per-case process (absolute), and its increment '
                     'over the same process after imports, before the model was built (weights + '
                     'activations + allocator caches); ratios use the increment.')
    cpt = checkpointing_table(results)
    if cpt:
        parts += ['', '## Activation checkpointing (training step)', '', cpt]
    with open(path, 'w') as f:
        f.write('\n'.join(parts) + '\n')


def write_plot(path: str, results: List[dict]) -> None:
    """Latency and memory vs input size, log-log, one line per model (and mode / dtype).

    x = equivalent square side ``sqrt(H * W)``: square sizes are joined by the line, non-square
    sizes (800x1280, 512x2048: the same pixel count as ~1024^2) are hollow markers of the
    model's colour, one marker shape per size.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    ok = [r for r in results if r.get('status') == 'ok']
    series: Dict[tuple, List[dict]] = {}
    for r in ok:
        key = (label_of(r), r['mode'] + (' +cp' if r.get('with_cp') else ''), r['dtype'])
        series.setdefault(key, []).append(r)
    several = len({k[1:] for k in series}) > 1
    odd_sizes = sorted({tuple(r['size']) for r in ok if r['size'][0] != r['size'][1]},
                       key=lambda hw: hw[0] * hw[1])
    odd_marker = dict(zip(odd_sizes, 'Dv^PX*<>'))
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.4))
    cuda = any(r.get('device') == 'cuda' for r in ok)
    ticks = set()
    for i, (key, rs) in enumerate(sorted(series.items())):
        rs = sorted(rs, key=lambda r: (r['size'][0] * r['size'][1], r['size'][0]))
        is_base = baseline_of(rs[0]) is None and not rs[0].get('config')
        color = f'C{i % 10}'
        label = key[0] + (f' [{key[1]} {key[2]}]' if several else '')
        for ax, get in ((axes[0], lambda r: r.get('latency_ms')), (axes[1], mem_of)):
            sq = [(r['size'][0], get(r)) for r in rs
                  if r['size'][0] == r['size'][1] and get(r) is not None]
            if sq:
                ax.plot([p[0] for p in sq], [p[1] for p in sq], color=color, label=label,
                        marker='s' if is_base else 'o', linestyle='--' if is_base else '-',
                        markersize=5)
                ticks.update(p[0] for p in sq)
            for r in rs:
                if r['size'][0] != r['size'][1] and get(r) is not None:
                    ax.plot([(r['size'][0] * r['size'][1]) ** 0.5], [get(r)], linestyle='none',
                            marker=odd_marker[tuple(r['size'])], markersize=8,
                            markerfacecolor='none', markeredgecolor=color,
                            label=None if sq else label)
    axes[0].set_ylabel('latency (ms, median)')
    axes[1].set_ylabel('peak CUDA memory allocated (MB)' if cuda
                       else 'peak RSS increment over imports (MB)')
    for ax in axes:
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.set_xlabel('input size (side of a square with the same pixel count, log)')
        ax.grid(True, which='both', alpha=0.3)
        if ticks:
            ax.set_xticks(sorted(ticks))
            ax.set_xticklabels([str(t) for t in sorted(ticks)], fontsize=8)
            ax.minorticks_off()
    axes[0].set_title('Latency vs resolution')
    axes[1].set_title('Peak memory vs resolution')
    handles, labels = axes[0].get_legend_handles_labels()
    for hw, mk in odd_marker.items():
        handles.append(Line2D([], [], linestyle='none', marker=mk, markerfacecolor='none',
                              markeredgecolor='k', markersize=8))
        labels.append(f'{size_str(hw)} (hollow)')
    if handles:
        fig.legend(handles, labels, loc='lower center', ncol=min(5, len(labels)), fontsize=8)
    rows = -(-len(labels) // 5) if handles else 0
    fig.tight_layout(rect=(0, 0.04 + 0.035 * rows, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# profiling
# ----------------------------------------------------------------------------------------------


def profile_cases(args, cases: List[dict]) -> str:
    """torch.profiler on each case in this process; returns the printed tables."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    if args.threads:
        torch.set_num_threads(args.threads)
    text = []
    for c in cases:
        torch.manual_seed(0)
        model = build_model(c.get('model'), tiny=c.get('tiny', False),
                            with_cp=c.get('with_cp', False), config=c.get('config'),
                            cfg_options=c.get('cfg_options')).to(c['device'])
        train = c['mode'] == 'train'
        model.train(train)
        x = torch.randn(c.get('batch', 1), 3, *c['size'], device=c['device'])
        amp = (torch.autocast(x.device.type, dtype=torch.bfloat16) if c['dtype'] == 'bf16'
               else contextlib.nullcontext())

        def step():
            if train:
                model.zero_grad(set_to_none=True)
                with amp:
                    outs = model(x)
                sum(o.float().mean() for o in outs).backward()
            else:
                with torch.no_grad(), amp:
                    model(x)

        for _ in range(max(1, c.get('warmup', 1))):
            step()
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if c['device'] == 'cuda' else [])
        t0 = time.perf_counter()
        extra = {}
        if args.profile_stack:  # Python frames (file(line): function, nn.Module) per op
            try:
                extra['experimental_config'] = torch._C._profiler._ExperimentalConfig(verbose=True)
            except Exception:  # pragma: no cover - older torch
                pass
        with profile(activities=acts, record_shapes=True, with_stack=args.profile_stack,
                     **extra) as prof:
            for _ in range(args.profile_iters):
                step()
            if c['device'] == 'cuda':
                torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) * 1e3 / args.profile_iters
        title = (f"== profile: {label_of(c)} {size_str(c['size'])} {c['mode']} {c['dtype']} "
                 f"({args.profile_iters} iter, {wall:.0f} ms/iter wall with profiler) ==")
        sort = 'self_cuda_time_total' if c['device'] == 'cuda' else 'self_cpu_time_total'
        ka = prof.key_averages()
        tables = [title, ka.table(sort_by=sort, row_limit=args.profile_top),
                  '-- by input shape --',
                  prof.key_averages(group_by_input_shape=True).table(
                      sort_by=sort, row_limit=args.profile_top)]
        if args.profile_stack:
            tables += ['-- by stack (5 frames) --',
                       prof.key_averages(group_by_stack_n=5).table(
                           sort_by=sort, row_limit=args.profile_top)]
        if args.profile_trace:
            os.makedirs(args.profile_trace, exist_ok=True)
            prof.export_chrome_trace(os.path.join(
                args.profile_trace, f"{c.get('model', 'config')}_{size_str(c['size'])}_"
                f"{c['mode']}_{c['dtype']}.json"))
        block = '\n'.join(tables)
        print(block, flush=True)
        text.append(block)
        del model, x
    return '\n\n'.join(text)


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def parse_args(argv=None):
    try:  # --cfg-options (with --config) needs mmengine; backbone-only runs need only torch
        from mmengine.config import DictAction
    except ImportError:
        DictAction = 'append'
    p = argparse.ArgumentParser(
        description='Latency / throughput / peak memory of backbones vs resolution '
                    '(fresh subprocess per case).',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--models', nargs='+', choices=sorted(MODELS), default=None,
                   help=f'models (default {DEFAULT_MODELS}; with --compare-checkpointing '
                        f'{CP_DEFAULT_MODELS}); baselines are added unless --no-baselines')
    p.add_argument('--config', nargs='+', default=None,
                   help='det/seg config(s): benchmark the full model built through the registry')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                   help='with --config: xxx=yyy pairs merged into the config, as in '
                        'tools/train.py (e.g. model.backbone.depth=2 '
                        'model.decode_head.channels=128)')
    p.add_argument('--no-baselines', action='store_true', help='do not add the baselines')
    p.add_argument('--sizes', nargs='+', default=None,
                   help=f'square sizes (512) or HxW (800x1280); default {DEFAULT_SIZES} '
                        f'({CP_DEFAULT_SIZES} with --compare-checkpointing)')
    p.add_argument('--mode', choices=['infer', 'train', 'both'], default='infer')
    p.add_argument('--dtype', nargs='+', choices=['fp32', 'bf16'], default=['fp32'])
    p.add_argument('--device', default='cpu', help='cpu or cuda')
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--warmup', type=int, default=None, help='untimed iterations, at least 1 (cpu 1, cuda 5)')
    p.add_argument('--repeats', type=int, default=None, help='timed iterations (cpu 3, cuda 30)')
    p.add_argument('--threads', type=int, default=None,
                   help='torch / OpenMP threads (default: all cores)')
    p.add_argument('--tiny', action='store_true', help='small arch overrides (smoke tests)')
    p.add_argument('--with-cp', action='store_true', help='activation checkpointing on')
    p.add_argument('--compare-checkpointing', action='store_true',
                   help='train step with and without with_cp; reports the peak-memory reduction')
    p.add_argument('--allocator', choices=['retain', 'default'], default='retain',
                   help='CPU: retain = glibc malloc keeps freed memory (mmvssm.utils.malloc, for '
                        'every model alike); default = glibc defaults (large blocks re-faulted '
                        'each step)')
    p.add_argument('--no-tf32', action='store_true', help='CUDA: keep fp32 matmuls in full fp32')
    p.add_argument('--case-timeout', type=float, default=1800, help='seconds per case')
    p.add_argument('--isolation', choices=['forkserver', 'exec', 'none'],
                   default='forkserver' if sys.platform.startswith('linux') else 'exec',
                   help='fresh process per case: forked from an import-only server (imports paid '
                        'once) or a new interpreter each; none = this process (CPU memory not '
                        'measured)')
    p.add_argument('--json', default=None, help='write all results (and environment) here')
    p.add_argument('--append', action='store_true',
                   help='keep the results already in --json and skip those cases')
    p.add_argument('--markdown', default=None, help='write the table(s) here')
    p.add_argument('--plot', default=None, help='PNG: latency and memory vs resolution')
    p.add_argument('--no-progress', action='store_true')
    p.add_argument('--profile', action='store_true',
                   help='torch.profiler instead of the timing sweep: top ops by self CPU time')
    p.add_argument('--profile-top', type=int, default=30)
    p.add_argument('--profile-iters', type=int, default=1)
    p.add_argument('--profile-stack', action='store_true', help='also group by Python stack')
    p.add_argument('--profile-trace', default=None, help='directory for chrome traces')
    p.add_argument('--profile-out', default=None, help='write the profile tables to this file')
    p.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.cfg_options and not args.config:
        p.error('--cfg-options needs --config (it is merged into that config)')
    if args.models is None and not args.config:
        args.models = CP_DEFAULT_MODELS if args.compare_checkpointing else DEFAULT_MODELS
    if args.sizes is None:
        args.sizes = CP_DEFAULT_SIZES if args.compare_checkpointing else DEFAULT_SIZES
    if args.compare_checkpointing:
        if args.mode == 'infer':
            args.mode = 'train'  # checkpointing only matters for a training step
        if not any(a == '--models' for a in (argv if argv is not None else sys.argv[1:])):
            args.no_baselines = True
    cuda = args.device.startswith('cuda')
    if args.warmup is None:
        args.warmup = 5 if cuda else 1
    if args.repeats is None:
        args.repeats = 30 if cuda else 3
    if args.threads is None and not cuda:
        args.threads = os.cpu_count()
    for name in ('warmup', 'repeats', 'batch', 'threads'):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f'--{name} must be at least 1, got {value}')
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['--worker']:
        return worker_main(argv[1])
    args = parse_args(argv)
    if args.device.startswith('cuda'):
        import torch
        if not torch.cuda.is_available():
            print('--device cuda: no CUDA device available', file=sys.stderr)
            return 2
    cases = build_cases(args)
    if args.profile:
        text = profile_cases(args, cases)
        if args.profile_out:
            with open(args.profile_out, 'w') as f:
                f.write(text + '\n')
        return 0
    opts = dict(_environment=True, threads=args.threads, device=args.device,
                allocator=args.allocator,
                no_tf32=args.no_tf32, command='python ' + ' '.join(
                    [os.path.relpath(os.path.abspath(__file__), os.getcwd())] + list(argv)))
    if args.isolation == 'forkserver':  # the parent never imports torch: imports are paid once
        env = run_case_forked(opts, 600)
    elif args.isolation == 'exec':
        env = run_case_subprocess(opts, 600)
    else:
        env = environment(opts)
    env.pop('wall_s', None)
    previous = []
    if args.append and args.json and os.path.isfile(args.json):
        with open(args.json) as f:
            previous = json.load(f).get('results', [])

    def save(results):
        if args.json:
            env['loadavg_end'] = os.getloadavg() if hasattr(os, 'getloadavg') else None
            tmp = args.json + '.tmp'
            with open(tmp, 'w') as f:
                json.dump(dict(environment=env, results=results), f, indent=1)
            os.replace(tmp, args.json)

    results = run_sweep(args, cases, previous, save)
    save(results)
    print(markdown_table(results))
    cpt = checkpointing_table(results)
    if cpt:
        print('\nActivation checkpointing (training step):\n' + cpt)
    if args.markdown:
        write_markdown(args.markdown, results, env)
    if args.plot:
        write_plot(args.plot, results)
    bad = [r for r in results if r.get('status') == 'error']
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
