"""Register the backbones and adapters in mmengine's root ``MODELS`` registry.

mmdet's and mmseg's ``MODELS`` registries are children of mmengine's, and a child looks a
type up in its parents when it has none of that name, so ``type='Vim'`` works in both
mmdet and mmseg configs without this package importing either of them.
"""
from mmengine.registry import MODELS

from ..adapters import DeconvPyramid, SimpleFeaturePyramid
from ..backbones import ARM, VSSM, MambaOut, Vim

BACKBONES = (Vim, VSSM, MambaOut, ARM)
ADAPTERS = (SimpleFeaturePyramid, DeconvPyramid)

for _cls in BACKBONES + ADAPTERS:
    MODELS.register_module(module=_cls)
