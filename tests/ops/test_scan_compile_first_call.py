"""A process whose first scan call is compiled: ``torch.compile`` must not trace the backend choice.

Before, dynamo traced :func:`~mmvssm.ops.resolve_backend`: its lazy import of ``mmvssm._C`` changed a
global during the trace, and building the guards failed ("Unexpected type <class 'module'>") for any
compiled training step that was the process's first scan; with CUDA tensors the lazy import of
``selective_scan_cuda`` (``importlib.import_module``) cannot be traced at all (a graph break; an error
with ``fullgraph=True``). Each case runs in a fresh interpreter, since the suite's other tests have
long since imported both modules in this one.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import mmvssm.ops as ops
from mmvssm.ops import selective_scan
from mmvssm.ops.scan_custom_op import selective_scan_op

pytestmark = pytest.mark.skipif(selective_scan_op is None, reason='torch < 2.4: no torch.library.custom_op')

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# the first scan call of the process: a compiled training step (one graph, fullgraph), then eager
FIRST_CALL = '''
import sys, torch
{setup}
from mmvssm.ops import selective_scan
g = torch.Generator().manual_seed(0)
u = torch.randn(2, 8, 50, generator=g, requires_grad=True)
delta, A = torch.rand(2, 8, 50, generator=g), -torch.rand(8, 4, generator=g)
B, C = torch.randn(2, 4, 50, generator=g), torch.randn(2, 4, 50, generator=g)

def step(u):
    return selective_scan(u, delta, A, B, C, delta_softplus=True).square().sum()

compiled = torch.compile(step, backend='aot_eager', fullgraph=True)(u)
(g_compiled,) = torch.autograd.grad(compiled, [u])
eager = step(u)
(g_eager,) = torch.autograd.grad(eager, [u])
torch.testing.assert_close(compiled, eager)
torch.testing.assert_close(g_compiled, g_eager)
print('OK', 'selective_scan_cuda' in sys.modules)
'''

# a stand-in selective_scan_cuda on the CPU: mamba-ssm's fwd / bwd signatures, the reference math forward
# and a fixed stand-in backward
FAKE_CUDA_MODULE = '''
import torch
from mmvssm.ops.scan_ref import selective_scan_ref_math

def fwd(u, delta, A, B, C, D, z, delta_bias, softplus):
    out, last = selective_scan_ref_math(u, delta, A, B, C, D, None, delta_bias, delta_softplus=softplus)
    x = torch.zeros(u.shape[0], u.shape[1], (u.shape[2] + 2047) // 2048, 2 * A.shape[1])
    x[:, :, -1, 1::2] = last
    return (out, x) if z is None else (out, x, out * torch.nn.functional.silu(z))

def bwd(u, delta, A, B, C, D, z, delta_bias, dout, x, out, none, softplus, recompute):
    # not the scan's gradient: a fixed function of dout, the same for the eager and the compiled call
    grads = [dout * 2, dout * 3] + [torch.zeros_like(t) if t is not None else None for t in (A, B, C, D, delta_bias)]
    return grads + ([torch.zeros_like(z)] if z is not None else [])
'''


def _run(code, extra_path=None):
    env = dict(os.environ)
    env.pop(ops.ENV_VAR, None)
    env['PYTHONPATH'] = os.pathsep.join(p for p in (extra_path, ROOT, os.environ.get('PYTHONPATH')) if p)
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0 and 'OK' in res.stdout, res.stderr[-3000:]
    return res.stdout


def test_first_scan_call_compiled_cpu():
    """The cpu backend: one graph, eager's values and gradients; the CUDA module is never imported."""
    out = _run(FIRST_CALL.format(setup=''))
    assert 'OK False' in out


def test_first_scan_call_compiled_cuda_standin(tmp_path):
    """The cuda call site (stand-in module, device check faked): the module is imported while compiling,
    with ``fullgraph=True``, and the compiled step computes what the eager one does."""
    (tmp_path / 'selective_scan_cuda.py').write_text(FAKE_CUDA_MODULE)
    setup = textwrap.dedent('''
        import mmvssm.ops
        sys.modules['mmvssm.ops.selective_scan']._device_is_cuda = lambda device: True
        assert 'selective_scan_cuda' not in sys.modules
    ''')
    out = _run(FIRST_CALL.format(setup=setup), extra_path=str(tmp_path))
    assert 'OK True' in out


@pytest.mark.parametrize('backend, error', [('bogus', ValueError), ('cuda', ops.BackendUnavailableError)])
def test_backend_errors_keep_their_type_when_compiled(backend, error):
    """An unknown backend, or one that cannot run here, raises its own error from compiled code too."""
    args = (torch.randn(1, 4, 8), torch.rand(1, 4, 8), -torch.rand(4, 2), torch.randn(1, 2, 8), torch.randn(1, 2, 8))
    torch._dynamo.reset()
    with pytest.raises(error, match=backend):
        torch.compile(lambda *a: selective_scan(*a, backend=backend), backend='aot_eager')(*args)
