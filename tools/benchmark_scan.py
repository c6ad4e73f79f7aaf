"""Benchmark the selective-scan backends against the sequential reference, in the same run.

Every (case, mode, backend) runs in a fresh subprocess, so that peak RSS (``ru_maxrss``) belongs to that
backend alone and no allocator cache carries over. The baseline is the ``ref`` backend: the materializing
fp32 loop with the shape of mamba-ssm's ``selective_scan_ref`` (exp(delta A) and delta B u as
(B, D, L, N) tensors, one Python step per time step).

Examples::

    python tools/benchmark_scan.py                         # all cases, fwd and fwd+bwd, all CPU backends
    python tools/benchmark_scan.py --cases vim-s --modes fwd --markdown scan.md
    python tools/benchmark_scan.py --quick                 # short sequences, smoke test

Inputs are "init-like": A = -(n + 1), delta_bias = softplus^-1(logU[1e-3, 0.1]),
raw delta ~ 0.1 N(0, 1), u, B, C, z ~ N(0, 1), delta_softplus=True, with D.
"""
import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# name: (batch, dim, L, N, groups or None, with_z, description)
CASES = {
    'vim-s': (1, 768, 4096, 16, None, False, 'Vim-S 512x2048 (1, 768, 4096, 16)'),
    'vim-s-det-z': (1, 768, 4000, 16, None, True, 'Vim-S 800x1280 + z (1, 768, 4000, 16)'),
    'vmamba-t-s1': (1, 384, 64000, 1, 4, False, 'VMamba-T stage 1 (1, 4x96, 64000, 1) G=4'),
}
MODES = ('fwd', 'fwd+bwd')


# ------------------------------------------------------------------------------------------------ worker


def _inputs(batch, dim, L, N, groups, with_z, requires_grad):
    import torch
    g = torch.Generator().manual_seed(0)
    u = torch.randn(batch, dim, L, generator=g)
    delta = 0.1 * torch.randn(batch, dim, L, generator=g)
    A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(dim, 1)
    dt = torch.exp(torch.rand(dim, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    delta_bias = dt + torch.log(-torch.expm1(-dt))  # softplus^-1
    shape = (batch, N, L) if groups is None else (batch, groups, N, L)
    B, C = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    D = torch.randn(dim, generator=g)
    z = torch.randn(batch, dim, L, generator=g) if with_z else None
    ts = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)
    if requires_grad:
        for t in ts.values():
            if t is not None:
                t.requires_grad_(True)
    return ts


def _rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker(spec):
    if spec.get('allocator', 'retain') == 'retain':
        from mmvssm.utils.malloc import retain_freed_memory
        retain_freed_memory()
    import torch
    from mmvssm.ops import selective_scan
    if spec.get('threads'):
        torch.set_num_threads(spec['threads'])
    batch, dim, L, N, groups, with_z, _ = CASES[spec['case']] if not spec.get('shape') else spec['shape']
    bwd = spec['mode'] == 'fwd+bwd'
    ts = _inputs(batch, dim, L, N, groups, with_z, bwd)
    grad = torch.randn(batch, dim, L) if bwd else None
    rss_setup = _rss_mib()

    def run():
        if bwd:
            out = selective_scan(**ts, delta_softplus=True, backend=spec['backend'])
            out.backward(grad)
            for t in ts.values():
                if t is not None:
                    t.grad = None
        else:
            with torch.no_grad():
                selective_scan(**ts, delta_softplus=True, backend=spec['backend'])

    t0 = time.perf_counter()
    run()  # warm-up
    first = time.perf_counter() - t0
    times = []
    budget = spec['min_time']
    start = time.perf_counter()
    while len(times) < spec['min_reps'] or (time.perf_counter() - start < budget and len(times) < 200):
        if spec['backend'] == 'ref' and len(times) >= spec['min_reps'] and first * (len(times) + 1) > budget:
            break
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return dict(spec, median=statistics.median(times), iqr=q[2] - q[0], reps=len(times), first=first,
                rss_peak=_rss_mib(), rss_setup=rss_setup, elements=batch * dim * L * N,
                threads=torch.get_num_threads())


# ------------------------------------------------------------------------------------------------ driver


def _env_info():
    import torch
    cpu = platform.processor() or ''
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    from mmvssm.ops import available_backends
    avail = available_backends()
    return dict(torch=torch.__version__, cpu=cpu, cores=os.cpu_count(), threads=torch.get_num_threads(),
                capability=torch.backends.cpu.get_cpu_capability(),
                backends={k: v[1] for k, v in avail.items() if v[0]},
                load=os.getloadavg()[0] if hasattr(os, 'getloadavg') else None)


def _progress(total):
    try:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn)
        prog = Progress(TextColumn('{task.description}'), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        transient=False)
        prog.start()
        task = prog.add_task('benchmark', total=total)

        class _Rich:
            def update(self, desc):
                prog.update(task, description=desc)

            def advance(self):
                prog.advance(task)

            def close(self):
                prog.stop()

        return _Rich()
    except ImportError:
        pass
    try:
        from tqdm import tqdm
        bar = tqdm(total=total)

        class _Tqdm:
            def update(self, desc):
                bar.set_description(desc)

            def advance(self):
                bar.update(1)

            def close(self):
                bar.close()

        return _Tqdm()
    except ImportError:
        class _Plain:
            n = 0

            def update(self, desc):
                print(f'[{self.n + 1}/{total}] {desc}', file=sys.stderr, flush=True)

            def advance(self):
                self.n += 1

            def close(self):
                pass

        return _Plain()


def _run_child(spec, timeout):
    cmd = [sys.executable, os.path.abspath(__file__), '--worker', json.dumps(spec)]
    env = dict(os.environ)
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    if spec.get('threads'):
        env['OMP_NUM_THREADS'] = str(spec['threads'])
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(spec, error=f'timeout after {timeout}s')
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ['?']
        return dict(spec, error=f'exit {res.returncode}: {tail[0][:200]}')
    for line in res.stdout.splitlines()[::-1]:
        if line.startswith('RESULT '):
            return json.loads(line[7:])
    return dict(spec, error='no result')


def _table(results, env):
    lines = []
    lines.append(f"torch {env['torch']} | CPU {env['cpu']} ({env['cores']} cores, {env['capability']}) | "
                 f"threads {env['threads']} | allocator {env.get('allocator', 'retain')} | load avg at start "
                 f"{env['load']:.2f}" if env['load'] is not None else '')
    lines.append('')
    lines.append('| case | mode | backend | median ms | IQR ms | reps | vs ref | Melem/s | peak RSS MiB | RSS over inputs MiB |')
    lines.append('|---|---|---|---:|---:|---:|---:|---:|---:|---:|')
    refs = {(r['case'], r['mode']): r['median'] for r in results if r['backend'] == 'ref' and 'error' not in r}
    for r in results:
        desc = r['shape'][6] if r.get('shape') else CASES[r['case']][6] if r['case'] in CASES else r['case']
        if 'error' in r:
            lines.append(f"| {desc} | {r['mode']} | {r['backend']} | {r['error']} | | | | | | |")
            continue
        ref = refs.get((r['case'], r['mode']))
        ratio = f"{ref / r['median']:.1f}x" if ref else 'n/a'
        lines.append(f"| {desc} | {r['mode']} | {r['backend']} | {r['median'] * 1e3:.1f} | {r['iqr'] * 1e3:.1f} | "
                     f"{r['reps']} | {ratio} | {r['elements'] / r['median'] / 1e6:.0f} | {r['rss_peak']:.0f} | "
                     f"{r['rss_peak'] - r['rss_setup']:.0f} |")
    return '\n'.join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--cases', nargs='+', default=list(CASES), choices=list(CASES))
    ap.add_argument('--modes', nargs='+', default=list(MODES), choices=MODES)
    ap.add_argument('--backends', nargs='+', default=None, choices=['cpu', 'torch', 'ref'],
                    help='backends to time against ref, on CPU tensors (default: cpu, if built, and torch)')
    ap.add_argument('--min-time', type=float, default=2.0, help='seconds of timed runs per measurement')
    ap.add_argument('--min-reps', type=int, default=3)
    ap.add_argument('--threads', type=int, default=0, help='torch threads in the workers (0: default)')
    ap.add_argument('--allocator', choices=['retain', 'default'], default='retain',
                    help='retain = glibc malloc keeps freed memory (mmvssm.utils.malloc, every backend '
                         'alike, ref included); default = glibc defaults (outputs re-faulted each call)')
    ap.add_argument('--quick', action='store_true', help='divide every L by 16 (smoke test)')
    ap.add_argument('--timeout', type=float, default=1800)
    ap.add_argument('--markdown', metavar='FILE', help='also write the Markdown table to FILE')
    ap.add_argument('--json', metavar='FILE', help='also write raw results as JSON')
    ap.add_argument('--worker', help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.min_reps < 1:
        ap.error(f'--min-reps must be at least 1, got {args.min_reps}')
    if args.min_time < 0 or args.threads < 0 or args.timeout <= 0:
        ap.error('--min-time and --threads must be >= 0 and --timeout > 0')
    for path in (args.markdown, args.json):  # found before the run, not after it
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if path and (os.path.isdir(path) or not os.path.isdir(folder) or not os.access(folder, os.W_OK)):
            ap.error(f'cannot write {path!r}: not a file in an existing, writable folder')

    if args.worker:
        print('RESULT ' + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0

    sys.path.insert(0, ROOT)
    env = _env_info()
    env['allocator'] = args.allocator
    backends = args.backends or [b for b in ('cpu', 'torch') if b in env['backends']]
    backends = ['ref'] + [b for b in backends if b != 'ref']
    jobs = []
    for case in args.cases:
        for mode in args.modes:
            for b in backends:
                spec = dict(case=case, mode=mode, backend=b, min_time=args.min_time, min_reps=args.min_reps,
                            threads=args.threads, allocator=args.allocator)
                if args.quick:
                    bt, d, L, n, g, z, desc = CASES[case]
                    Lq = max(L // 16, 1)
                    spec['shape'] = (bt, d, Lq, n, g, z, f'{desc.split(" (")[0]} --quick {(bt, d, Lq, n)}'
                                     + (f' G={g}' if g else ''))
                jobs.append(spec)
    prog = _progress(len(jobs))
    results = []
    try:
        for spec in jobs:
            prog.update(f"{spec['case']} {spec['mode']} {spec['backend']}")
            results.append(_run_child(spec, args.timeout))
            prog.advance()
    finally:
        prog.close()
    threads = sorted({r['threads'] for r in results if 'threads' in r})  # what the workers ran with
    if threads:
        env['threads'] = threads[0] if len(threads) == 1 else '/'.join(map(str, threads))
    table = _table(results, env)
    print(table)
    if args.markdown:
        with open(args.markdown, 'w') as f:
            f.write('# Selective-scan benchmark\n\n`' + ' '.join(['python', 'tools/benchmark_scan.py'] + (argv or sys.argv[1:]))
                    + '`\n\n' + table + '\n')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(env=env, results=results), f, indent=1)
    return 0 if all('error' not in r for r in results) else 1


if __name__ == '__main__':
    sys.exit(main())
