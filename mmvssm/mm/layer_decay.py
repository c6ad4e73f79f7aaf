"""Layer-wise learning-rate decay for the mmvssm backbones (Vim, VSSM, MambaOut, ARM).

mmdet's / mmseg's ``LearningRateDecayOptimizerConstructor`` only know ConvNeXt/BEiT/MAE parameter
names and raise ``NotImplementedError`` for anything else. This constructor asks the backbone
itself: every mmvssm backbone implements ``num_layers`` and ``get_layer_id(name)`` (0 = embeddings,
``1..num_layers`` = blocks, ``num_layers + 1`` = everything after), so no parameter name is
re-parsed here.

Config::

    optim_wrapper = dict(
        type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
        constructor='MambaLayerDecayOptimWrapperConstructor',
        paramwise_cfg=dict(layer_decay_rate=0.9))   # num_layers: default backbone.num_layers

Each trainable parameter gets ``lr = base_lr * layer_decay_rate ** (num_layers + 1 - layer_id)``;
parameters outside the backbone (neck, heads) get layer id ``num_layers + 1`` (scale 1).
Weight decay is 0 for: biases (``*.bias``, and packed ones such as VSSM's 2-D ``dt_projs_bias``,
which Vim/ARM store as 1-D ``dt_proj.bias``) and every 1-D parameter, every parameter of a
normalisation layer (LayerNorm, LayerNorm2d, RMSNorm, GroupNorm, BatchNorm, ...), position
embeddings / cls tokens,
the SSM parameters ``A_log*`` / ``A_logs`` / ``A_b_log`` ... and the skip ``D`` / ``D_b`` /
``D_c`` / ``D_c_b`` / ``Ds``, and any parameter flagged ``_no_weight_decay = True``.
Frozen parameters (``requires_grad=False``) are left out of the optimizer.
"""
import re
from typing import Dict, List, Optional, Tuple

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn

#: Last name components that never get weight decay (SSM state matrix and skip, embeddings).
NO_DECAY_PATTERNS = (
    r'A(_\w+)?_logs?',          # A_log, A_b_log, A_c_log, A_c_b_log (Vim/ARM), A_logs (VSSM)
    r'A_log\w*',                # A_log_b and other A_log* spellings
    r'D(_b|_c|_c_b)?', r'Ds',   # skip connection
    r'\w*pos_embed\w*', r'cls_token', r'\w*relative_position_bias_table',
)
_NO_DECAY_RE = re.compile('|'.join(f'(?:{p})' for p in NO_DECAY_PATTERNS))
_NORM_TYPES: Tuple[type, ...] = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm,
                                 nn.LocalResponseNorm) + ((nn.RMSNorm,) if hasattr(nn, 'RMSNorm')
                                                          else ())
_NORM_NAME_RE = re.compile(r'(Norm|norm)([123][dD])?$')

SUPPORTED_KEYS = ('num_layers', 'layer_decay_rate', 'decay_type')


def is_norm_module(module: nn.Module) -> bool:
    """A normalisation layer: torch's norms, or any class named ``*Norm`` / ``*Norm2d``
    (mmvssm's ``RMSNorm``/``LayerNorm2d``, mmcv/mmpretrain variants)."""
    return isinstance(module, _NORM_TYPES) or bool(_NORM_NAME_RE.search(type(module).__name__))


def no_weight_decay(name: str, param: nn.Parameter, owner: nn.Module) -> bool:
    """Whether parameter ``name`` (full name), owned by module ``owner``, gets no weight decay."""
    last = name.rsplit('.', 1)[-1]
    return (param.ndim <= 1 or last == 'bias' or last.endswith('_bias') or is_norm_module(owner)
            or _NO_DECAY_RE.fullmatch(last) is not None
            or getattr(param, '_no_weight_decay', False))


def find_backbone(model: nn.Module) -> Tuple[nn.Module, str]:
    """``(backbone, prefix)``: ``model.backbone`` (prefix ``'backbone.'``) or the model itself
    when it implements ``get_layer_id`` (a bare backbone)."""
    backbone = getattr(model, 'backbone', None)
    if backbone is not None and hasattr(backbone, 'get_layer_id'):
        return backbone, 'backbone.'
    if hasattr(model, 'get_layer_id'):
        return model, ''
    what = type(backbone).__name__ if backbone is not None else type(model).__name__
    raise TypeError(f'MambaLayerDecayOptimWrapperConstructor: {what} has no get_layer_id(name); '
                    'use an mmvssm backbone (Vim, VSSM, MambaOut, ARM) or implement '
                    'num_layers and get_layer_id on it')


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class MambaLayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Layer-wise lr decay and no-decay rules for mmvssm backbones (see module docstring).

    ``paramwise_cfg``:
        layer_decay_rate (float, required): per-layer lr multiplier, in (0, 1].
        num_layers (int, optional): defaults to ``backbone.num_layers``.
        decay_type (str, optional): ``'layer_wise'`` (the only one).

    The param groups carry ``group_name`` (``layer_<id>_<decay|no_decay>``), ``lr_scale``,
    ``layer_id`` and ``param_names`` besides ``lr`` / ``weight_decay``.
    """

    def _validate_cfg(self) -> None:
        cfg = self.paramwise_cfg
        if not isinstance(cfg, dict):
            raise TypeError(f'paramwise_cfg should be a dict, got {type(cfg).__name__}')
        unknown = sorted(set(cfg) - set(SUPPORTED_KEYS))
        if unknown:
            raise ValueError(f'MambaLayerDecayOptimWrapperConstructor: unsupported paramwise_cfg '
                             f'keys {unknown}; supported: {list(SUPPORTED_KEYS)}')
        if 'layer_decay_rate' not in cfg:
            raise ValueError('MambaLayerDecayOptimWrapperConstructor: paramwise_cfg needs '
                             'layer_decay_rate (e.g. 0.9)')
        rate = cfg['layer_decay_rate']
        if not 0 < rate <= 1:
            raise ValueError(f'layer_decay_rate must be in (0, 1], got {rate}')
        if cfg.get('decay_type', 'layer_wise') != 'layer_wise':
            raise ValueError(f"decay_type {cfg['decay_type']!r} is not supported; "
                             "use 'layer_wise'")
        if self.base_lr is None:
            raise ValueError('MambaLayerDecayOptimWrapperConstructor needs optimizer.lr')

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module=None) -> None:
        """Fill ``params`` with one group per (layer id, decay / no decay) of ``module``."""
        backbone, bb_prefix = find_backbone(module)
        num_layers: Optional[int] = self.paramwise_cfg.get('num_layers')
        if num_layers is None:
            num_layers = int(backbone.num_layers)
        rate = float(self.paramwise_cfg['layer_decay_rate'])
        base_wd = self.base_wd or 0.
        owners: Dict[str, nn.Module] = {}
        for mod_name, mod in module.named_modules():
            for p_name, _ in mod.named_parameters(recurse=False):
                owners[f'{mod_name}.{p_name}' if mod_name else p_name] = mod

        groups: Dict[str, dict] = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            if bb_prefix == '' or name.startswith(bb_prefix):
                layer_id = int(backbone.get_layer_id(name[len(bb_prefix):]))
                if not 0 <= layer_id <= num_layers + 1:
                    raise ValueError(f'{name}: layer id {layer_id} outside [0, {num_layers + 1}]'
                                     f' (num_layers={num_layers}); check paramwise_cfg.num_layers')
            else:
                layer_id = num_layers + 1
            no_decay = no_weight_decay(name, param, owners[name])
            group_name = f'layer_{layer_id}_{"no_decay" if no_decay else "decay"}'
            if group_name not in groups:
                scale = rate ** (num_layers + 1 - layer_id)
                groups[group_name] = dict(
                    params=[], param_names=[], group_name=group_name, layer_id=layer_id,
                    lr_scale=scale, lr=self.base_lr * scale,
                    weight_decay=0. if no_decay else base_wd)
            groups[group_name]['params'].append(param)
            groups[group_name]['param_names'].append(name)
        for name in sorted(groups, key=lambda g: (groups[g]['layer_id'], g)):
            g = groups[name]
            print_log(f'{name}: lr_scale={g["lr_scale"]:.4g}, weight_decay={g["weight_decay"]}, '
                      f'{len(g["params"])} params', logger='current')
            params.append(g)
