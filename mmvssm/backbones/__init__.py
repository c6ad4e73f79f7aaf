"""The four vision-Mamba families as plain PyTorch backbones with one uniform API (see ``base.py``)."""
from .arm import ARM
from .base import BaseBackbone
from .mambaout import MambaOut
from .vim import Vim
from .vssm import VSSM

__all__ = ['ARM', 'BaseBackbone', 'MambaOut', 'Vim', 'VSSM']
