"""mmvssm: vision-Mamba backbones for OpenMMLab.

``import mmvssm`` needs only torch (the backbones also need timm). When mmengine is
installed, the backbones, adapters and glue are registered in mmengine's registries
(visible from mmdet and mmseg configs through ``custom_imports=dict(imports=['mmvssm'])``).
"""
from .version import __version__

try:
    import mmengine  # noqa: F401
except ImportError:  # torch-only install: plain PyTorch modules, no registration
    pass
else:
    from . import mm  # noqa: F401  (registration, checkpoint compat)

__all__ = ['__version__']
