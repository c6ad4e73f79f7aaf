"""Parameters and FLOPs of an mmdet / mmseg model, counting the selective scan.

    python tools/get_flops.py CONFIG [--shape H W] [--cfg-options key=value ...]

Prints ``Params: <x> M`` and ``FLOPs: <y> G``. FLOPs are multiply-accumulates (mmengine's /
fvcore's convention, as VMamba's and MambaOut's tables), the scan counted as
``9·B·L·D·N + B·D·L`` (``+ B·D·L`` with a fused z gate), see ``mmvssm/mm/flops.py``.

The input is one random ``(1, 3, H, W)`` image at the canonical size of the config's default
scope unless ``--shape`` is given:

- ``mmdet``: ``3 x 1280 x 800`` (H=1280, W=800), VMamba's ``FLOPs.mmdet_flops``. The whole
  ``mode='tensor'`` forward is traced (backbone, neck, RPN, the RoI heads on the proposals, as
  mmdet's ``get_flops.py``); meta information describes an unpadded ``H x W`` image.
- ``mmseg``: ``3 x 512 x 2048``, VMamba's ``FLOPs.mmseg_flops``: backbone + decode head
  (``mode='tensor'``; the auxiliary head is not run, as in mmseg's ``get_flops.py``).

``Params`` counts every parameter of the built model (auxiliary heads included), as VMamba does.

The model is counted in eval mode. This reproduces VMamba's recorded numbers to the unit
(Mask R-CNN VMamba-T [s1l8]: 49.755M / 271163376640; UperNet: 61.903M / 948.78G). VMamba's own
Mask R-CNN R50 row (260.152G) is 0.36G above this tool's 259.791G: its ``mmdet_flops`` never
calls ``model.eval()``, so layer2-4 BatchNorms of the (``norm_eval`` but not yet ``train()``-ed)
ResNet are traced in training mode and counted as ``5·numel`` instead of ``2·numel``
(3 x 120.32M elements = 360.96M). The vision-Mamba models have no BatchNorm in backbone or
heads, so their counts do not depend on the mode.
"""
import argparse
import importlib
import os
import sys
from typing import Optional, Sequence, Tuple

import torch

CANONICAL_SHAPES = {'mmdet': (1280, 800), 'mmseg': (512, 2048)}


def build_model(cfg):
    """Build ``cfg.model`` in the config's default scope through mmengine's registry."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, init_default_scope

    import mmvssm  # noqa: F401  (registers the backbones and the FLOP handles)
    scope = cfg.get('default_scope', 'mmdet')
    init_default_scope(scope)
    importlib.import_module(f'{scope}.registry')
    model = MODELS.build(cfg.model)
    return revert_sync_batchnorm(model).eval(), scope


def _det_samples(h: int, w: int):
    from mmdet.structures import DetDataSample
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                scale_factor=(1., 1.), img_id=0)
    return [DetDataSample(metainfo=meta)]


def _seg_samples(h: int, w: int):
    from mmseg.structures import SegDataSample
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w))
    return [SegDataSample(metainfo=meta)]


class _TensorForward(torch.nn.Module):
    """``model(inputs, data_samples, mode='tensor')`` as a one-input module for the tracer,
    with the model's own module names (``model.`` prefix) in the per-module statistics."""

    def __init__(self, model, data_samples):
        super().__init__()
        self.model = model
        self._samples = data_samples

    def forward(self, inputs):
        return self.model(inputs, self._samples, mode='tensor')


def get_flops(cfg, shape: Optional[Sequence[int]] = None, seed: int = 0) -> dict:
    """``{'params', 'flops', 'shape', 'scope', 'unsupported'}`` for a loaded mmengine Config.

    ``unsupported``: op kinds that the analyzer met but counts as 0 (with their call counts).
    """
    from mmengine.analysis import FlopAnalyzer, parameter_count

    from mmvssm.mm.flops import flop_handles
    model, scope = build_model(cfg)
    if scope not in CANONICAL_SHAPES:
        raise ValueError(f'default_scope {scope!r}: expected one of {sorted(CANONICAL_SHAPES)}')
    h, w = tuple(shape) if shape else CANONICAL_SHAPES[scope]
    samples = _det_samples(h, w) if scope == 'mmdet' else _seg_samples(h, w)
    inputs = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed))
    wrapped = _TensorForward(model, samples).eval()
    with torch.no_grad():
        analyzer = FlopAnalyzer(wrapped, (inputs,)).set_op_handle(**flop_handles())
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        analyzer.tracer_warnings('none')
        flops = analyzer.total()
    return dict(params=parameter_count(model)[''], flops=flops, shape=(3, h, w), scope=scope,
                unsupported=dict(analyzer.unsupported_ops()))


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('config', help='mmdet / mmseg config file')
    p.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                   help='input height and width (default: 1280 800 for mmdet, 512 2048 for mmseg)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config settings, key=value (mmengine syntax)')
    return p.parse_args(argv)


def main(argv=None) -> Tuple[float, float]:
    args = parse_args(argv)
    sys.path.insert(0, os.getcwd())
    from mmengine.config import Config
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    res = get_flops(cfg, args.shape)
    print(f'Input shape: {res["shape"]} ({res["scope"]})')
    if res['unsupported']:
        print('Counted as 0: ' + ', '.join(f'{k} x{v}' for k, v in
                                            sorted(res['unsupported'].items())))
    print(f'Params: {res["params"] / 1e6:.3f} M')
    print(f'FLOPs: {res["flops"] / 1e9:.2f} G')
    return res['params'], res['flops']


if __name__ == '__main__':
    main()
