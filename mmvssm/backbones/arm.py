"""ARM (OliverRensu/ARM, "MambaMLP"): plain 4-scan Mamba + SwiGLU backbone with a middle cls token.

Reading order: arch presets -> ``ARMBlock`` -> ``ARM`` -> official checkpoint conversion
(fine-tuned and pretraining checkpoints).

Semantics follow ``Finetuning/models_mamba.py`` + ``Finetuning/mamba_simple.py`` at
OliverRensu/ARM@996d93e (``research/anchors.md`` §4, ``fixtures/README.md`` A1-A5):

* block: ``x = x + DropPath(mixer(LN1(x)))``, ``x = x + DropPath(SwiGLU(LN2(x)))``; ``norm_f`` is
  a LayerNorm (the ``rms_norm``/``fused_add_norm`` flags of the official factories are unused);
* mixer ("v3", ``expand=1``): rows forward/backward and columns forward/backward,
  ``out_proj((y + y_b.flip + col(y_c + y_c_b.flip)) / 4)``. The column scan here uses the real
  token grid ``H x W`` (any aspect ratio) and the real cls index ``M // 2``. The official code
  uses ``int(sqrt(L))`` and holds out token ``L // 2 = (M + 1) // 2``: for the released models
  (14x14, 24x24: even ``M``) and any even square grid the result is identical (checked against
  the ``arm_depth2`` fixture); for odd ``M`` (e.g. 3x3, 7x7) the official code scans the cls token
  inside the transposed grid and holds out a patch token instead, which this implementation
  deliberately does not reproduce (fixtures README A3); non-square grids do not run officially.
* dense forward: same input handling, online ``pos_embed`` resize and middle-cls handling as
  :class:`~mmvssm.backbones.vim.Vim` (the cls token stays in the sequence, dropped from outputs).
* the drop-path schedule and the weight init are those of Vim's code, of which ARM's
  fine-tuning model is a fork (``[0] + linspace`` per block; GPT-2 style ``out_proj`` rescale).
"""
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.utils.checkpoint as cp
from timm.layers import DropPath
from torch import nn

from ..layers.mamba_mixer import DIRECTION_SUFFIX, MambaMixer
from ..layers.pos_embed import adapt_middle_cls_pos_embed, insert_zero_middle_cls
from ..layers.swiglu import SwiGLU
from ..ops.scan_orders import ARM_ORDERS
from .base import check_image, resolve_arch
from .vim import PlainMiddleClsBackbone, drop_path_schedule, family_guard, tokens_to_map

_ARM_COMMON = dict(patch_size=16, stride=16, d_state=16, expand=1, img_size=224)
_ARM_DIRECTIONS = ARM_ORDERS  # ('row', 'row_rev', 'col', 'col_rev')
#: per-direction parameter stems replicated from a single-direction (pretraining) mixer
_PER_DIRECTION = ('conv1d.weight', 'conv1d.bias', 'x_proj.weight', 'dt_proj.weight',
                  'dt_proj.bias')
#: top-level keys of ARM's pretraining model that belong to its autoregressive decoder
_PRETRAIN_ONLY = ('ar_token', 'dec_pos_embed', 'enc2dec.', 'dec_block.', 'norm_1.', 'norm_2.',
                  'norm_3.', 'norm_4.', 'ar_norm.', 'ar_pred.', 'mask')


class ARMBlock(nn.Module):
    """``MambaMLP`` block: ``x + DP(mixer(LN1(x)))`` then ``x + DP(SwiGLU(LN2(x)))``."""

    def __init__(self, dim: int, d_state: int = 16, expand: float = 1, drop_path: float = 0.,
                 norm_eps: float = 1e-5, mlp_hidden: Optional[int] = None):
        super().__init__()
        self.mixer = MambaMixer(dim, d_state=d_state, expand=expand, directions=_ARM_DIRECTIONS,
                                divide_out=True)
        self.mlp = SwiGLU(dim, mlp_hidden or dim * 4 * 2 // 3)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor, hw: Tuple[int, int], cls_index: Optional[int]):
        x = x + self.drop_path(self.mixer(self.norm1(x), hw, cls_index))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ARM(PlainMiddleClsBackbone):
    """ARM backbone returning NCHW maps at stride 16.

    Args:
        arch: ``'base'`` (768, 12 blocks), ``'large'`` (1024, 24), ``'huge'`` (1536, 24), or a dict.
        embed_dim, depth, patch_size, stride, d_state, expand, img_size: override the preset
            (``img_size`` = training size of the stored ``pos_embed``, 224).
        out_indices: blocks whose outputs are returned (default 4 evenly spaced, last included);
            later blocks are not run and are frozen.
        final_norm: apply ``norm_f`` (LayerNorm) to every output (else ``norm_f`` is frozen).
        use_cls_token: keep the pretrained middle cls token in the sequence (not in outputs).
        drop_rate, drop_path_rate, norm_eps, frozen_stages, with_cp, init_cfg: as :class:`Vim`.
    """
    arch_zoo = {
        'base': dict(embed_dim=768, depth=12, **_ARM_COMMON),
        'large': dict(embed_dim=1024, depth=24, **_ARM_COMMON),
        'huge': dict(embed_dim=1536, depth=24, **_ARM_COMMON),
    }
    ALLOWED_MISSING = ()
    ALLOWED_UNEXPECTED = ('head.*',)
    FAMILY = 'ARM'

    def __init__(self, arch: Union[str, dict] = 'base', embed_dim: Optional[int] = None,
                 depth: Optional[int] = None, patch_size: Optional[int] = None,
                 stride: Optional[int] = None, d_state: Optional[int] = None,
                 expand: Optional[float] = None, img_size: Optional[int] = None,
                 in_chans: int = 3, out_indices: Optional[Sequence[int]] = None,
                 final_norm: bool = False, use_cls_token: bool = True, drop_rate: float = 0.,
                 drop_path_rate: float = 0.1, norm_eps: float = 1e-5, frozen_stages: int = -1,
                 with_cp: bool = False, init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        cfg = resolve_arch(self.arch_zoo, arch, dict(
            embed_dim=embed_dim, depth=depth, patch_size=patch_size, stride=stride,
            d_state=d_state, expand=expand, img_size=img_size), self.FAMILY)
        dim = self._init_plain(cfg, in_chans, out_indices, final_norm, use_cls_token, drop_rate,
                               with_cp, frozen_stages)
        dpr = drop_path_schedule(drop_path_rate, self.depth)
        self.layers = nn.ModuleList([
            ARMBlock(dim, cfg['d_state'], cfg['expand'], drop_path=dpr[i], norm_eps=norm_eps)
            for i in range(self.depth)])
        self.norm_f = nn.LayerNorm(dim, eps=norm_eps)
        self._init_weights()  # Vim's (ARM's fine-tuning model is a fork of Vim's code)
        self._freeze_unused()

    # ----- forward -------------------------------------------------------------------------
    def forward_layers(self, x: torch.Tensor, dense: bool = True,
                       keep: Optional[Sequence[int]] = None, last: Optional[int] = None):
        """Run blocks ``0..last``; returns ``(outs, x, hw, cls_index)``, ``outs[i]`` = output
        tokens of block ``i`` for ``i`` in ``keep`` (all when None)."""
        check_image(x, self.in_chans, self.FAMILY)
        last = self.depth - 1 if last is None else last
        x, hw, cls_index = self.embed(x, dense=dense)
        use_cp = getattr(self, 'grad_checkpointing', False) and self.training and \
            torch.is_grad_enabled()
        outs = {}
        for i in range(last + 1):
            layer = self.layers[i]
            if use_cp:
                x = cp.checkpoint(layer, x, hw, cls_index, use_reentrant=False)
            else:
                x = layer(x, hw, cls_index)
            if keep is None or i in keep:
                outs[i] = x
        return outs, x, hw, cls_index

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``(B, C, H, W)`` -> tuple of ``(B, D, ceil(H/16), ceil(W/16))`` maps."""
        outs, _, hw, cls_index = self.forward_layers(x, dense=True, keep=self.out_indices,
                                                     last=max(self.out_indices))
        maps = []
        for i in self.out_indices:
            feat = self.norm_f(outs[i]) if self.final_norm else outs[i]
            maps.append(tokens_to_map(feat, hw, cls_index))
        return tuple(maps)

    def forward_cls(self, x: torch.Tensor, global_pool: bool = True) -> torch.Tensor:
        """The official ``forward_features``: ``norm_f`` then, with ``global_pool`` (the
        fine-tuning setting), ``(mean(tokens[:c]) + mean(tokens[c+1:])) / 2``, else the cls
        token ``tokens[:, c]``, ``c = M // 2``."""
        if not self.use_cls_token:
            raise RuntimeError('ARM.forward_cls needs use_cls_token=True')
        _, x, _, c = self.forward_layers(x, dense=False, keep=())
        x = self.norm_f(x)
        if global_pool:
            return (x[:, :c].mean(1) + x[:, c + 1:].mean(1)) / 2
        return x[:, c]

    # ----- checkpoints ---------------------------------------------------------------------
    @staticmethod
    def is_pretrain_checkpoint(state_dict: Dict[str, torch.Tensor]) -> bool:
        """A pretraining (``models_pretrain.py``) checkpoint: single-direction mixers."""
        return any(k.endswith('mixer.A_log') for k in state_dict) and \
            not any(k.endswith('mixer.A_b_log') for k in state_dict)

    @classmethod
    def convert_official(cls, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Fine-tuned ARM checkpoints: names unchanged (``head.*`` allowed unexpected).

        Pretraining checkpoints (one scan direction, no cls token, ``[1, M, D]`` ``pos_embed``,
        an autoregressive decoder) are converted as ARM's ``main_finetune.py`` does: the decoder
        keys are dropped, every ``conv1d``/``x_proj``/``dt_proj``/``A_log``/``D`` is copied into
        the ``_b``, ``_c`` and ``_c_b`` branches, and a zero cls position is inserted at
        ``M // 2``. The missing ``cls_token`` and ``norm_f`` keep the model's initialisation,
        as the official non-strict load does (see :meth:`adapt_state_dict`).
        """
        family_guard(state_dict, cls.FAMILY)
        if not cls.is_pretrain_checkpoint(state_dict):
            return dict(state_dict)
        out = {}
        for k, v in state_dict.items():
            if k.startswith(_PRETRAIN_ONLY):
                continue
            out[k] = v
            prefix, _, stem = k.partition('.mixer.')
            if not stem:
                continue
            for s in (DIRECTION_SUFFIX[d] for d in _ARM_DIRECTIONS[1:]):
                if stem in _PER_DIRECTION:
                    mod, param = stem.split('.')
                    out[f'{prefix}.mixer.{mod}{s}.{param}'] = v.clone()
                elif stem == 'A_log':
                    out[f'{prefix}.mixer.A{s}_log'] = v.clone()
                elif stem == 'D':
                    out[f'{prefix}.mixer.D{s}'] = v.clone()
        if 'pos_embed' in out:
            out['pos_embed'] = insert_zero_middle_cls(out['pos_embed'])
        out['__arm_pretrain__'] = torch.ones(())  # marker consumed by adapt_state_dict
        return out

    def adapt_state_dict(self, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Resize ``pos_embed`` to this model's grid; for a converted pretraining checkpoint
        fill ``cls_token`` and ``norm_f`` (absent there) with the current initialisation."""
        state_dict = dict(state_dict)
        if state_dict.pop('__arm_pretrain__', None) is not None:
            own = self.state_dict()
            for k in ('cls_token', 'norm_f.weight', 'norm_f.bias'):
                if k not in state_dict:
                    state_dict[k] = own[k].clone()
        return adapt_middle_cls_pos_embed(state_dict, self.pos_embed, self.FAMILY)
