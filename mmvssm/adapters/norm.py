"""A tiny 2-D normalisation builder for the adapters (no mmcv needed).

``norm_cfg`` follows mmcv's ``build_norm_layer`` vocabulary, so configs stay familiar:
``dict(type='LN' | 'LN2d' | 'GN' | 'BN' | 'BN2d' | 'SyncBN', requires_grad=True, **kwargs)``
where ``kwargs`` go to the torch class (``eps``, ``momentum``, ``affine``, ``num_groups`` for GN).
``'LN'`` is the channel-first LayerNorm over C of an NCHW map (ViTDet's ``LayerNorm``, eps 1e-6
by default). ``None`` gives ``nn.Identity``.
"""
import copy
from typing import Optional

from torch import nn

from ..layers.layer_norm_2d import LayerNorm2d


def build_norm2d(norm_cfg: Optional[dict], num_features: int) -> nn.Module:
    """Build the normalisation layer for an NCHW map with ``num_features`` channels."""
    if norm_cfg is None:
        return nn.Identity()
    if not isinstance(norm_cfg, dict) or 'type' not in norm_cfg:
        raise TypeError(f'norm_cfg must be a dict with a "type", got {norm_cfg!r}')
    cfg = copy.deepcopy(norm_cfg)
    kind = cfg.pop('type')
    cfg.pop('_scope_', None)  # added by mmengine to dicts inherited from 'mmseg::' / 'mmdet::' bases
    requires_grad = cfg.pop('requires_grad', True)
    if kind in ('LN', 'LN2d', 'LayerNorm2d'):
        cfg.setdefault('eps', 1e-6)
        layer = LayerNorm2d(num_features, **cfg)
    elif kind == 'GN':
        if 'num_groups' not in cfg:
            raise KeyError('norm_cfg type GN needs "num_groups"')
        layer = nn.GroupNorm(num_channels=num_features, **cfg)
    elif kind in ('BN', 'BN2d'):
        layer = nn.BatchNorm2d(num_features, **cfg)
    elif kind in ('SyncBN', 'SyncBatchNorm'):
        layer = nn.SyncBatchNorm(num_features, **cfg)
    else:
        raise KeyError(f'unsupported norm type {kind!r}; use LN, GN, BN or SyncBN')
    for p in layer.parameters():
        p.requires_grad = requires_grad
    return layer
