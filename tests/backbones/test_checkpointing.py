"""Activation checkpointing (``with_cp=True``) changes memory, never results.

For every family with small arch overrides: same seed, same weights, same input, a training step
with and without checkpointing must give the same outputs and the same gradient for every
parameter (tight tolerance), and checkpointing must actually be used (one call per block).
Drop path is on in one variant: ``torch.utils.checkpoint`` must replay the same random masks.
"""
import pytest
import torch
import torch.utils.checkpoint as tcp

from mmvssm.backbones import ARM, VSSM, MambaOut, Vim

# (class, small overrides, number of checkpointed blocks per forward)
FAMILIES = {
    'vim': (Vim, dict(arch='tiny', embed_dim=32, depth=3, d_state=4, out_indices=(0, 2)), 3),
    'arm': (ARM, dict(arch='base', embed_dim=32, depth=3, d_state=4, out_indices=(1, 2)), 3),
    'vssm': (VSSM, dict(arch='tiny', depths=[1, 1, 2, 1], dims=16), 5),
    'vssm_v0': (VSSM, dict(arch='tiny_v0', depths=[1, 1, 1, 1], dims=16, d_state=4), 4),
    'mambaout': (MambaOut, dict(arch='tiny', depths=[1, 1, 2, 1], dims=[16, 24, 32, 40]), 5),
}
SIZE = (2, 3, 48, 80)  # non-square, so row/column orders differ
pytestmark = pytest.mark.usefixtures('one_thread')  # tests/backbones/conftest.py


def build(cls, kw, drop_path, with_cp):
    torch.manual_seed(0)
    model = cls(drop_path_rate=drop_path, with_cp=with_cp, **kw)
    return model.train()


def train_step(model, x, seed=1):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # same drop-path masks in both runs
    outs = model(x)
    # a loss that touches every output element with distinct weights
    loss = sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() + o.square().mean()
               for o in outs)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()
             if p.requires_grad}
    return [o.detach() for o in outs], grads


@pytest.mark.parametrize('drop_path', [0.0, 0.2], ids=['no_drop_path', 'drop_path'])
@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_checkpointing_gives_same_gradients(family, drop_path, monkeypatch):
    cls, kw, n_blocks = FAMILIES[family]
    x = torch.randn(*SIZE, generator=torch.Generator().manual_seed(2))

    ref_model = build(cls, kw, drop_path, with_cp=False)
    cp_model = build(cls, kw, drop_path, with_cp=True)
    cp_model.load_state_dict(ref_model.state_dict())

    calls = []
    real = tcp.checkpoint

    def counting(*args, **kwargs):
        calls.append(kwargs.get('use_reentrant'))
        return real(*args, **kwargs)

    monkeypatch.setattr(tcp, 'checkpoint', counting)
    ref_outs, ref_grads = train_step(ref_model, x)
    assert calls == [], 'with_cp=False must not checkpoint'
    cp_outs, cp_grads = train_step(cp_model, x)
    assert len(calls) == n_blocks, f'{family}: expected one checkpoint per block'
    assert all(r is False for r in calls), 'checkpointing must be non-reentrant (DDP-safe)'

    assert len(ref_outs) == len(cp_outs)
    for a, b in zip(ref_outs, cp_outs):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)
    assert ref_grads.keys() == cp_grads.keys() and ref_grads
    for name, g in ref_grads.items():
        torch.testing.assert_close(cp_grads[name], g, rtol=1e-5, atol=1e-6,
                                   msg=lambda m, n=name: f'{family}: grad of {n}: {m}')


@pytest.mark.parametrize('family', ['vim', 'vssm', 'mambaout'])
def test_set_grad_checkpointing_toggles(family, monkeypatch):
    """``set_grad_checkpointing()`` switches it on after construction; eval / no_grad skip it."""
    cls, kw, n_blocks = FAMILIES[family]
    model = build(cls, kw, 0.0, with_cp=False)
    calls = []
    real = tcp.checkpoint
    monkeypatch.setattr(tcp, 'checkpoint',
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    model.set_grad_checkpointing(True)
    x = torch.randn(1, 3, 32, 32)
    sum(o.sum() for o in model(x)).backward()
    assert len(calls) == n_blocks
    calls.clear()
    with torch.no_grad():
        model.eval()(x)
    assert calls == [], 'inference must not checkpoint'
