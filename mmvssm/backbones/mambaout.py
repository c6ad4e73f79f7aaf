"""MambaOut (Yu & Wang, CVPR 2025): a 4-stage pyramid of Gated CNN blocks, no SSM.

Module names follow timm's ``mambaout.py`` (``stem.*``, ``stages.{i}.downsample.*``,
``stages.{i}.blocks.{j}.*``), so timm checkpoints load as-is and layer-wise lr decay can match
``stages.i.blocks.j``. :meth:`MambaOut.convert_official` also reads the official repository's flat
checkpoints (``downsample_layers.*``, ``stages.{s}.{b}.*``, ``norm.*``, ``head.*``).

Dense-prediction recipe (the authors, MambaOut#251): a LayerNorm on each stage output
(``out_norms.{i}``, eps 1e-6 like every norm of the model), NCHW outputs at strides 4/8/16/32.
Any H x W works: every stride-2 conv has padding 1, so stage ``i`` is ``ceil(H / 2**(i+2))`` high.
"""
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from timm.layers import trunc_normal_
from torch import nn

from ..layers.conv_stem import ConvStem
from ..layers.downsample import ConvDownsample
from ..layers.gated_cnn import GatedCNNBlock
from ..utils.checkpoint import CheckpointMismatchError
from .base import (StagedBackbone, check_frozen_stages, check_image, resolve_arch,
                   stage_out_indices)


class MambaOutStage(nn.Module):
    """Optional stride-2 downsample, then ``depth`` Gated CNN blocks (NHWC in and out)."""

    def __init__(self, in_dim: int, dim: int, depth: int, drop_path: Sequence[float],
                 downsample: bool, norm_layer, act_layer, expansion_ratio: float, kernel_size: int,
                 conv_ratio: float):
        super().__init__()
        self.downsample = ConvDownsample(in_dim, dim, norm_layer) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            GatedCNNBlock(dim, expansion_ratio=expansion_ratio, kernel_size=kernel_size,
                          conv_ratio=conv_ratio, norm_layer=norm_layer, act_layer=act_layer,
                          drop_path=drop_path[j])
            for j in range(depth)])


class MambaOut(StagedBackbone):
    """MambaOut backbone returning NCHW feature maps of the stages in ``out_indices``.

    Args:
        arch: a preset of :attr:`arch_zoo` (``femto``, ``kobe``, ``tiny``, ``small``, ``base``)
            or a dict with ``depths``, ``dims`` (and optionally the fields below).
        depths, dims, expansion_ratio, kernel_size, conv_ratio: override the preset when not None.
        in_chans: input channels.
        out_indices: stages whose outputs are returned (strides 4, 8, 16, 32; an int or ints, maps
            in stage order); later stages are not run and are frozen.
        drop_path_rate: stochastic depth, linear over all blocks from 0 (as official); None takes
            the preset's ImageNet value. The authors used 0.3 / 0.3-0.4 / 0.6 (T / S / B) for det/seg.
        out_norm: LayerNorm (eps 1e-6) on each returned stage output (the authors' det/seg recipe).
        frozen_stages: -1 (none), or ``k``: ``stem`` and stages ``0..k-1`` (with their
            downsamples and out-norms) get no gradient and stay in eval mode.
        with_cp: activation checkpointing per block.
        init_cfg: ``dict(type='Pretrained', checkpoint=...)`` loads an official, timm or mmvssm file.

    Layer ids for lr decay (:meth:`get_layer_id`): ``stem`` 0; block ``j`` of stage ``i``
    ``1 + sum(depths[:i]) + j``; ``stages.i.downsample`` the id of the first block it feeds
    (ConvNeXt/mmpretrain convention); ``out_norms`` and anything else ``num_layers + 1``.
    """
    #: Presets of the official factories (``models/mambaout.py``); drop path = the ImageNet recipe.
    arch_zoo: Dict[str, dict] = {
        'femto': dict(depths=[3, 3, 9, 3], dims=[48, 96, 192, 288], drop_path_rate=0.025),
        'kobe': dict(depths=[3, 3, 15, 3], dims=[48, 96, 192, 288], drop_path_rate=0.025),
        'tiny': dict(depths=[3, 3, 9, 3], dims=[96, 192, 384, 576], drop_path_rate=0.2),
        'small': dict(depths=[3, 4, 27, 3], dims=[96, 192, 384, 576], drop_path_rate=0.4),
        'base': dict(depths=[3, 4, 27, 3], dims=[128, 256, 512, 768], drop_path_rate=0.6),
    }
    _defaults = dict(expansion_ratio=8 / 3, kernel_size=7, conv_ratio=1.0, drop_path_rate=0.)

    #: A classification checkpoint has no stage-output norms.
    ALLOWED_MISSING = ('out_norms.*',)
    #: The classifier (post-pool norm + MLP head) is dropped, and so are the output norms of
    #: stages this model does not return (a det/seg checkpoint with other ``out_indices``).
    ALLOWED_UNEXPECTED = ('head.*', 'out_norms.*')

    def __init__(self, arch='tiny', depths=None, dims=None, expansion_ratio=None, kernel_size=None,
                 conv_ratio=None, in_chans: int = 3, out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate=None, out_norm: bool = True, frozen_stages: int = -1,
                 with_cp: bool = False, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        cfg = dict(self._defaults)
        cfg.update(resolve_arch(self.arch_zoo, arch, dict(
            depths=depths, dims=dims, expansion_ratio=expansion_ratio, kernel_size=kernel_size,
            conv_ratio=conv_ratio, drop_path_rate=drop_path_rate), 'MambaOut'))
        self.depths = list(cfg['depths'])
        self.dims = list(cfg['dims'])
        if len(self.depths) != len(self.dims):
            raise ValueError(f'MambaOut: depths {self.depths} and dims {self.dims} differ in length')
        num_stages = len(self.depths)
        self.out_indices = stage_out_indices(out_indices, num_stages, 'MambaOut')
        self.frozen_stages = check_frozen_stages(frozen_stages, num_stages, 'MambaOut')
        self.in_chans = in_chans
        self.arch_settings = cfg
        self.grad_checkpointing = with_cp

        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        dpr = torch.linspace(0, cfg['drop_path_rate'], sum(self.depths), device='cpu').tolist()
        self.stem = ConvStem(in_chans, self.dims[0], act_layer=nn.GELU, norm_layer=norm_layer)
        self.stages = nn.ModuleList()
        cur = 0
        for i in range(num_stages):
            self.stages.append(MambaOutStage(
                self.dims[i - 1] if i else self.dims[0], self.dims[i], self.depths[i],
                dpr[cur:cur + self.depths[i]], downsample=i > 0, norm_layer=norm_layer,
                act_layer=nn.GELU, expansion_ratio=cfg['expansion_ratio'],
                kernel_size=cfg['kernel_size'], conv_ratio=cfg['conv_ratio']))
            cur += self.depths[i]
        self.out_norms = nn.ModuleList(
            norm_layer(self.dims[i]) if (out_norm and i in self.out_indices) else nn.Identity()
            for i in range(num_stages))
        self._init_weights()
        self._freeze()

    # ----- init ---------------------------------------------------------------------------
    def _init_weights(self):
        """Official init: trunc-normal(0.02) conv/linear weights, zero biases, unit LayerNorms."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # ----- forward ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        check_image(x, self.in_chans, 'MambaOut')
        x = self.stem(x)  # NHWC
        outs = []
        for i, stage in enumerate(self.stages):
            x = self._run_blocks(stage.blocks, stage.downsample(x))
            if self._collect(i, x, outs):
                break
        return tuple(outs)

    def _stem(self) -> nn.Module:
        return self.stem

    def _stage_parts(self, i: int) -> List[nn.Module]:
        return [self.stages[i]]  # its downsample included

    def _out_norm(self, i: int) -> Optional[nn.Module]:
        return self.out_norms[i]

    def _out_map(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.out_norms[i](x).permute(0, 3, 1, 2).contiguous()

    # ----- layer-wise lr decay (num_layers = sum(depths)) -------------------------------
    def get_layer_id(self, name: str) -> int:
        if name.startswith('stem.'):
            return 0
        parts = name.split('.')
        if parts[0] == 'stages' and len(parts) > 2:
            stage = int(parts[1])
            first = 1 + sum(self.depths[:stage])
            if parts[2] == 'blocks':
                return first + int(parts[3])
            return first  # the downsample feeds this stage's first block
        return self.num_layers + 1

    # ----- checkpoints --------------------------------------------------------------------
    @classmethod
    def convert_official(cls, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Official (``downsample_layers.*``, ``stages.s.b.*``) or timm names -> ours (= timm's).

        The mapping is timm's ``checkpoint_filter_fn``; a timm or mmvssm state dict passes
        unchanged. The classifier ends up under ``head.*`` (dropped on load).
        """
        keys = list(state_dict)
        if not any(k.startswith(('stem.', 'downsample_layers.', 'stages.')) for k in keys):
            raise CheckpointMismatchError(
                'not a MambaOut checkpoint: no key starts with stem./downsample_layers./stages. '
                f'(first keys: {keys[:5]}). Is this a checkpoint of another family?')
        if any(k.startswith('stem.conv1.') for k in keys):
            return dict(state_dict)
        out = {}
        for k, v in state_dict.items():
            parts = k.split('.')
            if k.startswith('downsample_layers.0.'):
                k = 'stem.' + k[len('downsample_layers.0.'):]
            elif parts[0] == 'downsample_layers':
                k = '.'.join(['stages', parts[1], 'downsample'] + parts[2:])
            elif parts[0] == 'stages' and len(parts) > 2 and parts[2].isdigit():
                k = '.'.join(['stages', parts[1], 'blocks'] + parts[2:])
            elif k.startswith('norm.'):
                k = 'head.norm.' + k[len('norm.'):]
            elif k.startswith('head.fc1.'):
                k = 'head.pre_logits.fc.' + k[len('head.fc1.'):]
            elif k.startswith('head.norm.'):
                k = 'head.pre_logits.norm.' + k[len('head.norm.'):]
            elif k.startswith('head.fc2.'):
                k = 'head.fc.' + k[len('head.fc2.'):]
            out[k] = v
        return out
