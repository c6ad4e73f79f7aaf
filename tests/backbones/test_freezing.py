"""Freezing: ``frozen_stages`` as mmdet / mmpretrain backbones, unused stages frozen (DDP needs a
gradient for every trainable parameter), ``out_indices`` as an int, ``with_cp`` over frozen parts."""
import pytest
import torch
import torch.utils.checkpoint as tcp

from mmvssm.backbones import ARM, VSSM, MambaOut, Vim

# (class, small overrides, number of stages / blocks that frozen_stages counts)
FAMILIES = {
    'vim': (Vim, dict(arch='tiny', embed_dim=32, depth=3, d_state=4), 3),
    'arm': (ARM, dict(arch='base', embed_dim=32, depth=3, d_state=4), 3),
    'vssm': (VSSM, dict(arch='tiny', depths=[1, 1, 2, 1], dims=16), 4),
    'vssm_v0': (VSSM, dict(arch='tiny_v0', depths=[1, 1, 1, 1], dims=16, d_state=4), 4),
    'mambaout': (MambaOut, dict(arch='tiny', depths=[1, 1, 2, 1], dims=[16, 24, 32, 40]), 4),
}
X = torch.randn(2, 3, 48, 80, generator=torch.Generator().manual_seed(0))
pytestmark = pytest.mark.usefixtures('one_thread')  # tests/backbones/conftest.py


def build(family, **kw):
    cls, small, _ = FAMILIES[family]
    torch.manual_seed(0)
    return cls(**dict(small, **kw)).train()


def without_grad(model):
    """Trainable parameters that a backward through every output leaves without a gradient."""
    model.zero_grad(set_to_none=True)
    sum(o.square().mean() for o in model(X)).backward()
    return [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]


@pytest.mark.parametrize('out_indices', [(0, 1, 2), (1, ), (0, 2), 0])
@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_every_trainable_parameter_gets_a_gradient(family, out_indices):
    """What mmengine's DDP wrapper (find_unused_parameters=False) needs, for any out_indices."""
    assert without_grad(build(family, out_indices=out_indices)) == []


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_frozen_stages(family):
    n = FAMILIES[family][2]
    model = build(family, frozen_stages=1, drop_path_rate=0.5, out_indices=(0, 1))
    frozen, params = model._frozen_parts()
    assert frozen and all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(not p.requires_grad for p in params)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and without_grad(model) == []
    # frozen parts stay in eval mode through train(): no drop path there
    model.train()
    assert all(not m.training for m in frozen) and model.training
    first = [model(X)[0] for _ in range(2)]
    if family in ('vim', 'arm'):  # block 0 frozen, block 1 trains: compare the frozen block
        assert model.layers[0].training is False and model.layers[1].training
    else:  # stage 0's map (and its out-norm) is frozen
        torch.testing.assert_close(first[0], first[1], rtol=0, atol=0)
    # an optimizer step leaves the frozen weights as they were
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sum(o.sum() for o in model(X)).backward()
    opt.step()
    after = model.state_dict()
    frozen_names = {f'{mn}.{pn}' for mn, m in model.named_modules() if m in frozen
                    for pn, _ in m.named_parameters()}
    assert frozen_names
    assert all(torch.equal(before[k], after[k]) for k in frozen_names)
    assert any(not torch.equal(before[k], after[k]) for k in trainable)
    # 0 freezes the stem / patch embedding only (mmdet's Swin), or nothing (mmpretrain's ViT)
    def frozen_names_of(m):
        return {n for n, p in m.named_parameters() if not p.requires_grad}
    frozen_zero = frozen_names_of(build(family, frozen_stages=0)) - \
        frozen_names_of(build(family, frozen_stages=-1))  # (unused parts are frozen anyway)
    if family in ('vim', 'arm'):
        assert frozen_zero == set()
    else:
        assert frozen_zero and all(n.startswith(('patch_embed.', 'stem.')) for n in frozen_zero)
    # everything frozen; bad values refused
    whole = build(family, frozen_stages=n)
    assert not any(p.requires_grad for p in whole.parameters())
    for bad in (-2, n + 1, 1.5, True):
        with pytest.raises(ValueError, match='frozen_stages'):
            build(family, frozen_stages=bad)


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_out_indices_int_and_non_int(family):
    model = build(family, out_indices=1).eval()
    assert model.out_indices == (1, ) and len(model(X)) == 1
    for bad in ((1.7, ), '1', (True, ), 30, -30):
        with pytest.raises(ValueError, match='out_indices'):
            build(family, out_indices=bad)


@pytest.mark.parametrize('family', ['vssm', 'mambaout'])
def test_checkpointing_covers_blocks_after_frozen_ones(family, monkeypatch):
    """A block whose input needs no gradient (after frozen stages) is checkpointed too."""
    calls = []
    real = tcp.checkpoint
    monkeypatch.setattr(tcp, 'checkpoint', lambda *a, **k: calls.append(1) or real(*a, **k))
    model = build(family, frozen_stages=1, with_cp=True)
    sum(o.sum() for o in model(X)).backward()
    assert len(calls) == sum(model.depths)
