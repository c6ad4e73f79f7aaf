"""Every backbone exports with ``torch.export`` and compiles with ``torch.compile``, computing what the
eager model does (the scan enters graphs as the opaque ``mmvssm::selective_scan`` op)."""
import pytest
import torch

from mmvssm.backbones import ARM, VSSM, MambaOut, Vim
from mmvssm.ops.scan_custom_op import selective_scan_op

pytestmark = pytest.mark.skipif(selective_scan_op is None, reason='torch < 2.4: no torch.library.custom_op')

SMALL = {
    'Vim': lambda: Vim(arch='tiny', depth=2, out_indices=(0, 1), drop_path_rate=0.0),
    'VSSM': lambda: VSSM(arch='tiny', depths=(1, 1, 1, 1), drop_path_rate=0.0),
    'ARM': lambda: ARM(arch='base', depth=2, out_indices=(1,), drop_path_rate=0.0),
    'MambaOut': lambda: MambaOut(arch='femto', depths=(1, 1, 1, 1), drop_path_rate=0.0),
}
X = (1, 3, 64, 96)  # not square: the online position-embedding resize and the column scans


def _build(name):
    torch.manual_seed(0)
    return SMALL[name]().eval()


def _assert_same(outs, refs):
    assert len(outs) == len(refs)
    for o, r in zip(outs, refs):
        torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', list(SMALL))
def test_export(name, one_thread):
    model = _build(name)
    x = torch.randn(X)
    with torch.no_grad():
        refs = model(x)
    exported = torch.export.export(model, (x,))
    targets = {str(n.target) for n in exported.graph.nodes if n.op == 'call_function'}
    assert ('mmvssm.selective_scan.default' in targets) == (name != 'MambaOut')
    with torch.no_grad():
        _assert_same(exported.module()(x), refs)


def test_compile_inference_fullgraph(one_thread):
    """Inductor, one graph (no graph break): the fused conv / cached position embedding step aside."""
    model = _build('Vim')
    x = torch.randn(X)
    with torch.no_grad():
        refs = model(x)
        _assert_same(torch.compile(model, fullgraph=True)(x), refs)


@pytest.mark.parametrize('name', ['Vim', 'VSSM'])
def test_compile_training_step(name, one_thread):
    """Forward and backward of a compiled model give eager's loss and parameter gradients."""
    model = _build(name).train()
    x = torch.randn(2, *X[1:])
    weights = None

    def loss_and_grads(m):
        nonlocal weights
        outs = m(x)
        if weights is None:
            g = torch.Generator().manual_seed(1)
            weights = [torch.randn(o.shape, generator=g) for o in outs]
        loss = sum((o * w).sum() for o, w in zip(outs, weights))
        params = [p for p in model.parameters() if p.requires_grad]
        return loss, torch.autograd.grad(loss, params, allow_unused=True)

    loss_e, grads_e = loss_and_grads(model)
    loss_c, grads_c = loss_and_grads(torch.compile(model, backend='aot_eager'))
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-4)
    for g_c, g_e in zip(grads_c, grads_e):
        if g_e is None:
            assert g_c is None
            continue
        scale = g_e.abs().max().clamp_min(1e-6)
        torch.testing.assert_close(g_c / scale, g_e / scale, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('name', list(SMALL))
def test_export_dynamic_size(name, one_thread):
    """Export with a symbolic height and width (multiples of 32); the program runs other sizes,
    224x224 included: there Vim's / ARM's position grid is the stored 14x14 one (no resize)."""
    model = _build(name)
    h, w = torch.export.Dim('h', min=2, max=64), torch.export.Dim('w', min=2, max=64)
    exported = torch.export.export(model, (torch.randn(X),), dynamic_shapes=({2: 32 * h, 3: 32 * w},))
    for size in ((128, 64), (224, 224)):
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            _assert_same(exported.module()(x), model(x))


@pytest.mark.parametrize('name', list(SMALL))
def test_fake_tensor_shapes(name):
    """Shape propagation under ``FakeTensorMode`` (real weights, fake input) gives eager's shapes, and
    caches keep no fake tensor: eager calls afterwards still compute what they did before."""
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
    model = _build(name)
    x = torch.randn(X)
    with torch.no_grad():
        refs = model(x)
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fakes = model(mode.from_tensor(x))
        _assert_same(model(x), refs)
    assert all(isinstance(f, FakeTensor) for f in fakes)
    assert [f.shape for f in fakes] == [r.shape for r in refs]
