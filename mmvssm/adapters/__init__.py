"""Multi-scale adapters turning a plain backbone's stride-16 (or 8) maps into strides 4/8/16/32.

Plain ``nn.Module`` classes (registered as necks in :mod:`mmvssm.mm`); no mmcv needed.
"""
from .deconv_pyramid import DeconvPyramid
from .norm import build_norm2d
from .simple_pyramid import SimpleFeaturePyramid

__all__ = ['SimpleFeaturePyramid', 'DeconvPyramid', 'build_norm2d']
