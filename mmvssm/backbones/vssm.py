"""VMamba / VSSM (Liu et al., NeurIPS 2024): a 4-stage pyramid of VSS blocks (SS2D + MLP).

Two released families, both built from the same small pieces with explicit settings:

- **v2** (``tiny`` = VMamba-T s1l8, the paper's model; ``small``/``base`` = s2l15; ``tiny_s2l5``,
  ``small_s1l20``, ``base_s1l20``): channel-first (``LayerNorm2d``/``Linear2d``), SS2D without gate
  (``v05_noz``), d_state 1, MLP ratio 4, overlapping two-conv stem (``stem='v2'``), conv3x3 s2
  downsample (``downsample='v3'``).
- **v0** / vanilla (``tiny_v0``, ``small_v0``, ``base_v0``): channel-last (``nn.LayerNorm``), SS2D
  with ``silu(z)`` gate, d_state 16, no MLP, 4x4 patchify stem (``stem='v1'``), patch merging
  (``downsample='v1'``).

Parameter names are the official ones (``patch_embed.{0,2,5,7}``, ``layers.{i}.blocks.{j}.{norm,op,
norm2,mlp}``, ``layers.{i}.downsample.*``, ``op.x_proj_weight``/``dt_projs_*``/``A_logs``/``Ds``,
``outnorm{i}`` as ``Backbone_VSSM``), so an official classification checkpoint loads after dropping
``classifier.*`` and remapping the legacy names VMamba itself remaps on load
(:meth:`VSSM.convert_official`).

Outputs: ``outnorm{i}(stage_i)`` in NCHW for ``i`` in ``out_indices``, as ``Backbone_VSSM``, at
strides 4/8/16/32. Any H x W works: stem and downsample layers pad odd sizes, so stage ``i`` is
``ceil(H / 2**(i+2))`` high (identical to the official model whenever that divides).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from timm.layers import trunc_normal_
from torch import nn

from ..layers.conv_stem import OverlapStem, PatchifyStem
from ..layers.downsample import ConvDownsample2D, PatchMerging2D
from ..layers.layer_norm_2d import layer_norm
from ..layers.ss2d import SS2D
from ..layers.vss_block import VSSBlock
from ..utils.checkpoint import CheckpointMismatchError
from .base import (StagedBackbone, check_frozen_stages, check_image, resolve_arch,
                   stage_out_indices)

_V2 = dict(dims=96, d_state=1, ssm_ratio=2.0, ssm_conv_bias=False, ssm_gate=False, mlp_ratio=4.0,
           channel_first=True, stem='v2', downsample='v3')
_V0 = dict(dims=96, d_state=16, ssm_ratio=2.0, ssm_conv_bias=True, ssm_gate=True, mlp_ratio=0.0,
           channel_first=False, stem='v1', downsample='v1')


def _preset(base: dict, **kw) -> dict:
    cfg = dict(base)
    cfg.update(kw)
    return cfg


class VSSStage(nn.Module):
    """``blocks`` (VSS blocks) then ``downsample`` (to the next stage; ``nn.Identity`` for the last)."""

    def __init__(self, blocks: Sequence[nn.Module], downsample: nn.Module):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.downsample = downsample


class VSSM(StagedBackbone):
    """VMamba backbone returning NCHW feature maps of the stages in ``out_indices``.

    Args:
        arch: a preset of :attr:`arch_zoo` or a dict of the fields below (see
            :meth:`arch_from_official` to translate VMamba's own ``VSSM(**kwargs)``).
        depths: blocks per stage.
        dims: channels per stage, or an int ``C`` for ``[C, 2C, 4C, 8C]``.
        d_state, ssm_ratio, dt_rank, ssm_conv, ssm_conv_bias: SS2D settings (VMamba's ``ssm_*``).
        ssm_gate: ``silu(z)`` gate in SS2D (v0 ``forward_type='v0'``); False = ``*_noz`` (v2).
        mlp_ratio: MLP hidden ratio; 0 = no MLP branch (v0).
        channel_first: NCHW with ``LayerNorm2d``/``Linear2d`` (VMamba ``norm_layer='ln2d'``) or NHWC
            with ``nn.LayerNorm`` (``'ln'``).
        stem: ``'v1'`` patchify conv (k = s = patch_size) + norm; ``'v2'`` conv3x3 s2, norm, GELU,
            conv3x3 s2, norm (VMamba ``patchembed_version``).
        downsample: ``'v1'`` patch merging; ``'v2'`` conv2x2 s2 + norm; ``'v3'`` conv3x3 s2 + norm
            (VMamba ``downsample_version``).
        patch_size: stem stride (4).
        in_chans: input channels.
        out_indices: stages returned (an int or ints; maps come in stage order); later stages
            are not run and are frozen.
        drop_path_rate: stochastic depth, ``linspace(0, rate, sum(depths))`` over the blocks as
            official; None = the preset's (ImageNet yaml) value.
        out_norm: ``outnorm{i}`` LayerNorm on each returned stage (as ``Backbone_VSSM``).
        frozen_stages: -1 (none), or ``k``: ``patch_embed`` and stages ``0..k-1`` (with the
            downsamples feeding them and their out-norms) get no gradient and stay in eval mode.
        with_cp: activation checkpointing per block.
        init_cfg: ``dict(type='Pretrained', checkpoint=...)`` for official or mmvssm checkpoints.

    Layer ids for lr decay (:meth:`get_layer_id`): ``patch_embed`` 0; block ``j`` of stage ``i``
    ``1 + sum(depths[:i]) + j``; ``layers.i.downsample`` (which ends stage ``i`` in VMamba's naming
    but feeds stage ``i+1``) the id of the first block of stage ``i+1`` (ConvNeXt/mmpretrain
    convention: a downsample belongs to the stage it feeds); ``outnorm*`` ``num_layers + 1``.
    """
    #: Presets from ``classification/configs/vssm/*.yaml`` (anchors §2.3); ``tiny`` is the paper's
    #: VMamba-T (s1l8). ``base_v0`` uses the yaml's drop path 0.5 (its checkpoint name says 0.6).
    arch_zoo: Dict[str, dict] = {
        'tiny': _preset(_V2, depths=[2, 2, 8, 2], ssm_ratio=1.0, drop_path_rate=0.2),
        'small': _preset(_V2, depths=[2, 2, 15, 2], drop_path_rate=0.3),
        'base': _preset(_V2, depths=[2, 2, 15, 2], dims=128, drop_path_rate=0.6),
        'tiny_s2l5': _preset(_V2, depths=[2, 2, 5, 2], drop_path_rate=0.2),
        'small_s1l20': _preset(_V2, depths=[2, 2, 20, 2], ssm_ratio=1.0, drop_path_rate=0.3),
        'base_s1l20': _preset(_V2, depths=[2, 2, 20, 2], dims=128, ssm_ratio=1.0, drop_path_rate=0.5),
        'tiny_v0': _preset(_V0, depths=[2, 2, 9, 2], drop_path_rate=0.2),
        'small_v0': _preset(_V0, depths=[2, 2, 27, 2], drop_path_rate=0.3),
        'base_v0': _preset(_V0, depths=[2, 2, 27, 2], dims=128, drop_path_rate=0.5),
    }
    _defaults = dict(dt_rank='auto', ssm_conv=3, patch_size=4, drop_path_rate=0.)
    _fields = ('depths', 'dims', 'd_state', 'ssm_ratio', 'dt_rank', 'ssm_conv', 'ssm_conv_bias',
               'ssm_gate', 'mlp_ratio', 'channel_first', 'stem', 'downsample', 'patch_size',
               'drop_path_rate')

    #: A classification checkpoint has no stage-output norms (``Backbone_VSSM`` adds them).
    ALLOWED_MISSING = ('outnorm*',)
    #: The classifier (norm + head) is dropped, and so are the output norms of stages this
    #: model does not return (a det/seg checkpoint with other ``out_indices``).
    ALLOWED_UNEXPECTED = ('classifier.*', 'outnorm*')

    def __init__(self, arch='tiny', depths=None, dims=None, d_state=None, ssm_ratio=None,
                 dt_rank=None, ssm_conv=None, ssm_conv_bias=None, ssm_gate=None, mlp_ratio=None,
                 channel_first=None, stem=None, downsample=None, patch_size=None,
                 in_chans: int = 3, out_indices: Sequence[int] = (0, 1, 2, 3), drop_path_rate=None,
                 out_norm: bool = True, frozen_stages: int = -1, with_cp: bool = False,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        cfg = dict(self._defaults)
        cfg.update(resolve_arch(self.arch_zoo, arch, dict(
            depths=depths, dims=dims, d_state=d_state, ssm_ratio=ssm_ratio, dt_rank=dt_rank,
            ssm_conv=ssm_conv, ssm_conv_bias=ssm_conv_bias, ssm_gate=ssm_gate, mlp_ratio=mlp_ratio,
            channel_first=channel_first, stem=stem, downsample=downsample, patch_size=patch_size,
            drop_path_rate=drop_path_rate), 'VSSM'))
        unknown = sorted(set(cfg) - set(self._fields))
        missing = sorted(set(self._fields) - set(cfg))
        if unknown or missing:
            raise ValueError(f'VSSM: arch settings {"unknown " + str(unknown) if unknown else ""}'
                             f'{" missing " + str(missing) if missing else ""}; fields are {self._fields}')
        depths = list(cfg['depths'])
        dims = cfg['dims']
        dims = [int(dims * 2 ** i) for i in range(len(depths))] if isinstance(dims, int) else list(dims)
        if len(dims) != len(depths):
            raise ValueError(f'VSSM: depths {depths} and dims {dims} differ in length')
        num_stages = len(depths)
        self.depths, self.dims = depths, dims
        self.out_indices = stage_out_indices(out_indices, num_stages, 'VSSM')
        self.frozen_stages = check_frozen_stages(frozen_stages, num_stages, 'VSSM')
        self.channel_first = bool(cfg['channel_first'])
        self.patch_size = int(cfg['patch_size'])
        self.in_chans = in_chans
        self.arch_settings = cfg
        self.grad_checkpointing = with_cp
        Norm = layer_norm(self.channel_first)

        stems = dict(v1=PatchifyStem, v2=OverlapStem)
        if cfg['stem'] not in stems:
            raise ValueError(f"VSSM: stem must be one of {sorted(stems)}, got {cfg['stem']!r}")
        self.patch_embed = stems[cfg['stem']](in_chans, dims[0], self.patch_size, norm_layer=Norm,
                                              channel_first=self.channel_first)

        dpr = torch.linspace(0, cfg['drop_path_rate'], sum(depths), device='cpu').tolist()
        ssm = dict(d_state=cfg['d_state'], ssm_ratio=cfg['ssm_ratio'], dt_rank=cfg['dt_rank'],
                   d_conv=cfg['ssm_conv'], conv_bias=cfg['ssm_conv_bias'], gate=cfg['ssm_gate'])
        self.layers = nn.ModuleList()
        for i in range(num_stages):
            first = sum(depths[:i])
            blocks = [VSSBlock(dims[i], drop_path=dpr[first + j], channel_first=self.channel_first,
                               mlp_ratio=cfg['mlp_ratio'], **ssm) for j in range(depths[i])]
            down = (self._make_downsample(cfg['downsample'], dims[i], dims[i + 1])
                    if i < num_stages - 1 else nn.Identity())
            self.layers.append(VSSStage(blocks, down))

        if out_norm:
            for i in self.out_indices:
                self.add_module(f'outnorm{i}', Norm(dims[i]))
        self.out_norm = out_norm
        self._init_weights(reset_all=False)
        self._freeze()

    def _make_downsample(self, version: str, dim: int, out_dim: int) -> nn.Module:
        if version == 'v1':  # patch merging normalises 4C channel-last, whatever the layout
            return PatchMerging2D(dim, out_dim, norm_layer=nn.LayerNorm, channel_first=self.channel_first)
        if version in ('v2', 'v3'):
            return ConvDownsample2D(dim, out_dim, kernel_size=2 if version == 'v2' else 3,
                                    norm_layer=layer_norm(self.channel_first),
                                    channel_first=self.channel_first)
        raise ValueError(f"VSSM: downsample must be 'v1', 'v2' or 'v3', got {version!r}")

    @classmethod
    def arch_from_official(cls, kwargs: dict) -> dict:
        """An ``arch`` dict from the kwargs of VMamba's ``VSSM(...)`` (e.g. a yaml's ``MODEL.VSSM``).

        Only the released forward types are supported: ``'v0'`` (gated) and ``'v05_noz'`` (no gate).
        """
        ft = kwargs.get('forward_type', 'v2')
        gates = {'v0': True, 'v05_noz': False}
        if ft not in gates:
            raise ValueError(f'VSSM: forward_type {ft!r} is not a released VMamba variant; '
                             f'supported: {sorted(gates)}')
        norm = str(kwargs.get('norm_layer', 'ln')).lower()
        if norm not in ('ln', 'ln2d'):
            raise ValueError(f"VSSM: norm_layer {norm!r} not supported (use 'ln' or 'ln2d')")
        if kwargs.get('gmlp') or kwargs.get('posembed'):
            raise ValueError('VSSM: gmlp / posembed variants are not released and not supported')
        return dict(depths=list(kwargs['depths']), dims=kwargs['dims'],
                    d_state=kwargs.get('ssm_d_state', 16), ssm_ratio=kwargs.get('ssm_ratio', 2.0),
                    dt_rank=kwargs.get('ssm_dt_rank', 'auto'), ssm_conv=kwargs.get('ssm_conv', 3),
                    ssm_conv_bias=kwargs.get('ssm_conv_bias', True), ssm_gate=gates[ft],
                    mlp_ratio=kwargs.get('mlp_ratio', 4.0), channel_first=norm == 'ln2d',
                    stem=kwargs.get('patchembed_version', 'v1'),
                    downsample=kwargs.get('downsample_version', 'v2'),
                    patch_size=kwargs.get('patch_size', 4),
                    drop_path_rate=kwargs.get('drop_path_rate', 0.1))

    # ----- init ---------------------------------------------------------------------------
    def _init_weights(self, reset_all: bool = True):
        """Official init: trunc-normal(0.02) Linear/Linear2d weights, zero biases, unit LayerNorms,
        PyTorch-default convs and Mamba's SSM init (``reset_all`` re-draws those too)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif reset_all and isinstance(m, (nn.Conv2d, SS2D)):
                m.reset_parameters()

    # ----- forward ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        check_image(x, self.in_chans, 'VSSM')
        x = self.patch_embed(x)
        outs = []
        for i, layer in enumerate(self.layers):
            x = self._run_blocks(layer.blocks, x)
            if self._collect(i, x, outs):
                break
            x = layer.downsample(x)
        return tuple(outs)

    def _stem(self) -> nn.Module:
        return self.patch_embed

    def _stage_parts(self, i: int) -> List[nn.Module]:
        return [self.layers[i].blocks] + ([self.layers[i - 1].downsample] if i else [])

    def _out_norm(self, i: int) -> Optional[nn.Module]:
        return getattr(self, f'outnorm{i}', None)

    def _out_map(self, i: int, x: torch.Tensor) -> torch.Tensor:
        out = self._out_norm(i)(x) if self.out_norm else x
        return (out if self.channel_first else out.permute(0, 3, 1, 2)).contiguous()

    # ----- layer-wise lr decay (num_layers = sum(depths)) -------------------------------
    def get_layer_id(self, name: str) -> int:
        if name.startswith('patch_embed.'):
            return 0
        parts = name.split('.')
        if parts[0] == 'layers' and len(parts) > 3:
            stage = int(parts[1])
            if parts[2] == 'blocks':
                return 1 + sum(self.depths[:stage]) + int(parts[3])
            if parts[2] == 'downsample':
                return 1 + sum(self.depths[:stage + 1])
        return self.num_layers + 1

    # ----- checkpoints --------------------------------------------------------------------
    #: Legacy prefixes VMamba's ``VSSM._load_from_state_dict`` renames (fixtures README M7).
    _LEGACY_PREFIXES = (('patch_embed.proj', 'patch_embed.0'), ('patch_embed.norm', 'patch_embed.2'),
                        ('norm', 'classifier.norm'), ('head', 'classifier.head'))
    _LEGACY_BLOCK = (('.ln_1', '.norm'), ('.self_attention', '.op'))

    @classmethod
    def convert_official(cls, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Official VMamba names -> ours: the legacy renames VMamba applies on load (``patch_embed.
        proj/norm`` -> ``.0/.2``, ``ln_1`` -> ``norm``, ``self_attention`` -> ``op``, top-level
        ``norm``/``head`` -> ``classifier.*``); the classifier is then dropped on load."""
        keys = list(state_dict)
        if not any(k.startswith('layers.') for k in keys) or \
                not any(k.startswith('patch_embed.') for k in keys):
            raise CheckpointMismatchError(
                'not a VMamba (VSSM) checkpoint: expected patch_embed.* and layers.*.blocks.* keys '
                f'(first keys: {keys[:5]}). Is this a checkpoint of another family?')
        out = {}
        for k, v in state_dict.items():
            for src, dst in cls._LEGACY_PREFIXES:
                if k.startswith(src) and not k.startswith(dst):
                    k = dst + k[len(src):]
                    break
            if k.startswith('layers.') and '.blocks.' in k:
                for src, dst in cls._LEGACY_BLOCK:
                    parts = k.split('.')  # layers.i.blocks.j.<name>...
                    if len(parts) > 4 and '.' + parts[4] == src:
                        k = '.'.join(parts[:4] + [dst[1:]] + parts[5:])
            out[k] = v
        return out

    def adapt_state_dict(self, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Accept 1x1-conv shaped ``(out, in, 1, 1)`` weights for ``Linear2d`` (stored 2-D here)."""
        own = dict(self.named_parameters())
        out = {}
        for k, v in state_dict.items():
            p = own.get(k)
            if p is not None and p.dim() == 2 and v.dim() == 4 and v.shape[2:] == (1, 1) \
                    and v.shape[:2] == p.shape:
                v = v.reshape(p.shape)
            out[k] = v
        return out
