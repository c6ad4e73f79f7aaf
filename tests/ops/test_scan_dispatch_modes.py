"""Dispatch modes see the scan: under ``FlopCounterMode`` / ``FakeTensorMode`` ``selective_scan`` runs the
custom op ``mmvssm::selective_scan``, which ``torch.utils.flop_counter`` counts (twice VMamba's
multiply-accumulate count forward, four times backward) and which runs on fake tensors."""
import sys

import pytest
import torch

from mmvssm.ops import scan_custom_op, selective_scan
from mmvssm.ops.scan_flops import flops_selective_scan_fn
from mmvssm.ops.scan_custom_op import selective_scan_op

from ops_scan_cases import GRAD_NAMES, make_inputs

pytestmark = pytest.mark.skipif(selective_scan_op is None, reason='torch < 2.4: no torch.library.custom_op')

FlopCounterMode = pytest.importorskip('torch.utils.flop_counter').FlopCounterMode
FWD, BWD = torch.ops.mmvssm.selective_scan, torch.ops.mmvssm.selective_scan_backward


def _args(groups, with_D, with_z, requires_grad):
    inp = make_inputs(2, 8, 33, 4, groups, with_D=with_D, with_z=with_z, seed=5)
    return inp, [None if inp[k] is None else inp[k].clone().requires_grad_(requires_grad) for k in GRAD_NAMES]


@pytest.mark.parametrize('backend', ['cpu', 'torch', 'ref'])
@pytest.mark.parametrize('groups, with_D, with_z', [(None, True, True), (2, False, False), (4, True, False)])
def test_flop_counter_counts_forward_and_backward(backend, groups, with_D, with_z):
    inp, args = _args(groups, with_D, with_z, requires_grad=True)
    eager = selective_scan(*args, delta_softplus=True, backend=backend)
    with FlopCounterMode(display=False) as counter:
        out = selective_scan(*args, delta_softplus=True, backend=backend)
        forward = counter.get_flop_counts()['Global'].get(FWD, 0)
        out.backward(torch.ones_like(out))
    macs = flops_selective_scan_fn(2, 33, 8, 4, with_D=with_D, with_Z=with_z)
    counts = counter.get_flop_counts()['Global']
    assert forward == 2 * macs
    assert counts[FWD] == 2 * macs and counts[BWD] == 4 * macs
    assert counter.get_total_flops() == 6 * macs  # nothing else: the scan is one op each way
    torch.testing.assert_close(out, eager, rtol=0, atol=0)
    assert all(t.grad is not None for t in args if t is not None)


def test_fake_tensor_mode_gives_shapes():
    """Shape propagation with fake tensors (no data): the Function's C++ kernel would read data pointers."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    inp, args = _args(2, True, True, requires_grad=False)
    with FakeTensorMode() as mode:
        fake = [None if t is None else mode.from_tensor(t) for t in args]
        out, last = selective_scan(*fake, delta_softplus=True, return_last_state=True, backend='cpu')
    assert out.shape == (2, 8, 33) and last.shape == (2, 8, 4) and last.dtype == torch.float32
    assert type(out).__name__ == 'FakeTensor'


def test_backbone_scans_are_counted(monkeypatch):
    """Every scan call of a Vim forward is counted: the op's count is the sum of the calls' formulas."""
    from mmvssm.backbones import Vim
    calls = []
    real_op = scan_custom_op.selective_scan_op

    def recording_op(u, delta, A, B, C, D, z, *rest):
        calls.append(flops_selective_scan_fn(u.shape[0], u.shape[2], u.shape[1], A.shape[1],
                                             with_D=D is not None, with_Z=z is not None))
        return real_op(u, delta, A, B, C, D, z, *rest)

    monkeypatch.setattr(sys.modules['mmvssm.ops.selective_scan'], 'selective_scan_op', recording_op)
    torch.manual_seed(0)
    model = Vim(arch='tiny', depth=2, out_indices=(1,), drop_path_rate=0.0).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        eager = model(x)
        with FlopCounterMode(display=False) as counter:
            counted = model(x)
    assert len(calls) == 2  # two blocks, both directions in one grouped call each
    assert counter.get_flop_counts()['Global'][FWD] == 2 * sum(calls)
    torch.testing.assert_close(counted, eager, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('save_scan', [True, False])
def test_selective_activation_checkpointing(save_scan, monkeypatch):
    """torch's selective activation checkpointing (a dispatch mode) can keep the scan's outputs
    (``MUST_SAVE``): the recomputation then skips the kernel's forward. Gradients equal eager's."""
    import functools

    from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

    from mmvssm.backbones import Vim
    from mmvssm.ops import scan_cpu
    calls = []
    ext, _ = scan_cpu.load_cpu_extension()

    class Counting:
        def __getattr__(self, name):
            if name == 'scan_fwd':
                calls.append(name)
            return getattr(ext, name)

    monkeypatch.setattr(scan_cpu, 'load_cpu_extension', lambda: (Counting(), None))
    monkeypatch.setenv('MMVSSM_SCAN_BACKEND', 'cpu')
    torch.manual_seed(0)
    model = Vim(arch='tiny', depth=2, out_indices=(1,), drop_path_rate=0.0)
    x = torch.randn(1, 3, 32, 48)
    model(x)[0].sum().backward()
    eager = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    scans = len(calls)
    model.zero_grad()
    calls.clear()

    def policy(ctx, op, *args, **kwargs):
        keep = save_scan and op == torch.ops.mmvssm.selective_scan.default
        return CheckpointPolicy.MUST_SAVE if keep else CheckpointPolicy.PREFER_RECOMPUTE

    context_fn = functools.partial(create_selective_checkpoint_contexts, policy)
    checkpoint(lambda t: model(t)[0], x, use_reentrant=False, context_fn=context_fn).sum().backward()
    assert scans == 2 and len(calls) == (scans if save_scan else 2 * scans)  # 2 blocks, both directions in one call
    for g, e in zip([p.grad for p in model.parameters() if p.grad is not None], eager):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-6)
