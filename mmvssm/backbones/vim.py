"""Vim (Vision Mamba, hustvl/Vim): plain bidirectional-Mamba backbone with a middle cls token.

Reading order: shared helpers (also used by ARM, a fork of Vim's code) -> ``VimBlock`` -> ``Vim``
(embedding, blocks, dense ``forward``, classification-equivalent ``forward_cls``) -> official
checkpoint conversion.

Semantics follow ``vim/models_mamba.py`` at hustvl/Vim@dd0358a (see ``research/anchors.md`` §1
and ``fixtures/README.md`` V1-V6), with these deliberate differences for dense prediction:

* any input size: the image is zero-padded to the stride (bottom/right; for stride 8 < patch 16
  also ``(patch - stride) / 2`` top/left so the grid is exactly ``ceil(H/8) x ceil(W/8)`` and
  centred on the cells), and ``pos_embed`` is resized online (bicubic, timm's
  ``resample_abs_pos_embed``) from the stored square grid to the actual, possibly non-square,
  grid. The official code asserts ``H == W == img_size`` and resizes offline.
* the cls token is kept in the middle of the sequence (index ``M // 2`` of the actual grid, as in
  pretraining) with its own position embedding (the stored ``pos_embed[:, M0 // 2]``, never part
  of the grid resize) and dropped from the output maps (``use_cls_token=False`` leaves it out).
* ``feature_source``: which tensor of block ``i`` becomes a feature map:
    - ``'residual'`` (default): the residual stream after block ``i``,
      ``residual_i + drop_path(hidden_i)`` (what ``norm_f`` sees after the last block). As the
      official code: the detection code (``last_layer_process='add'``) uses it for its single map;
      the segmentation code with ``use_residual_as_feature=True`` reads it from the ``residual``
      output of block ``i + 1`` (so in training with the drop path of block ``i + 1``), and for
      the last block adds ``hidden + residual``;
    - ``'hidden'``: the mixer output ``hidden_i`` (the official segmentation code with
      ``use_residual_as_feature=False``, as in its Vim-T UperNet config).
  ``final_norm=True`` applies the pretrained ``norm_f`` (RMSNorm) to every output (the official
  det/seg code applies no norm).
"""
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.utils.checkpoint as cp
from timm.layers import DropPath, lecun_normal_, trunc_normal_
from torch import nn

from ..layers.mamba_mixer import MambaMixer
from ..layers.patch_embed import PatchEmbed
from ..layers.pos_embed import (MiddleClsEmbedMixin, PosEmbedCache,
                                adapt_middle_cls_pos_embed)
from ..layers.rms_norm import RMSNorm
from ..ops.scan_orders import VIM_ORDERS
from ..utils.checkpoint import CheckpointMismatchError
from .base import BaseBackbone, check_frozen_stages, check_image, index_tuple, resolve_arch

_VIM_COMMON = dict(patch_size=16, d_state=16, expand=2, img_size=224)

# ----------------------------------------------------------------------------------------------
# helpers shared by the plain middle-cls backbones (Vim, ARM)
# ----------------------------------------------------------------------------------------------


def drop_path_schedule(rate: float, depth: int) -> List[float]:
    """Vim's ``[0.0] + linspace(0, rate, depth)`` (``depth + 1`` entries; entry ``i`` for block
    ``i``, the last one for the final add before ``norm_f``). Plain Python: no tensor ``.item()``,
    so models can be built on the meta device."""
    if depth == 1:  # torch.linspace(0, rate, 1) == [0]
        return [0.0, 0.0]
    return [0.0] + [rate * i / (depth - 1) for i in range(depth)]


def default_out_indices(depth: int) -> Tuple[int, ...]:
    """Four evenly spaced blocks ending with the last: 24 -> (5, 11, 17, 23), 12 -> (2, 5, 8, 11)."""
    return tuple(sorted({max(0, (i + 1) * depth // 4 - 1) for i in range(4)}))


def check_out_indices(out_indices, depth: int, family: str) -> Tuple[int, ...]:
    """Blocks to return (an int or ints, negative from the end), in the order given (repeats
    kept: a pyramid may take one block twice); ``ValueError`` when empty, not ints or out of
    range."""
    given = index_tuple(out_indices, 'out_indices', family)
    idx = tuple(i + depth if i < 0 else i for i in given)
    bad = [i for i in idx if not 0 <= i < depth]
    if not idx or bad:
        raise ValueError(f'{family}: out_indices {given} out of range for depth {depth}')
    return idx


def layer_id_for(name: str, num_layers: int) -> int:
    """0 = embeddings, ``i + 1`` for ``layers.i.*``, ``num_layers + 1`` for everything else."""
    name = name[len('backbone.'):] if name.startswith('backbone.') else name
    if name.startswith(('patch_embed', 'pos_embed', 'cls_token')):
        return 0
    m = re.match(r'layers\.(\d+)\.', name)
    if m:
        return int(m.group(1)) + 1
    return num_layers + 1


def tokens_to_map(tokens: torch.Tensor, hw: Tuple[int, int],
                  cls_index: Optional[int]) -> torch.Tensor:
    """``(B, L, C)`` with an optional extra token at ``cls_index`` -> ``(B, C, H, W)``."""
    if cls_index is not None:
        tokens = torch.cat([tokens[:, :cls_index], tokens[:, cls_index + 1:]], dim=1)
    b, _, c = tokens.shape
    return tokens.transpose(1, 2).reshape(b, c, hw[0], hw[1]).contiguous()


#: Key patterns only one family's checkpoints have (names after wrapper prefixes are stripped);
#: MambaOut's first (timm's ``stem.``), as ARM's ``norm1`` would also match its blocks otherwise.
FAMILY_KEYS = {
    'MambaOut': r'^downsample_layers\.|^stages\.|^stem\.',
    'ARM': r'mixer\.A_c_log|^layers\.\d+\.mlp\.w1\.|^layers\.\d+\.norm1\.',
    'Vim': r'^layers\.\d+\.norm\.weight$',
    'VMamba': r'^layers\.\d+\.blocks\.|^classifier\.',
    'ViT/DeiT': r'^blocks\.\d+\.attn\.',
}


def family_guard(state_dict: Dict[str, torch.Tensor], family: str) -> None:
    """Raise :class:`CheckpointMismatchError` naming the family a checkpoint seems to come from
    (a key of :data:`FAMILY_KEYS` of another family)."""
    for other, pattern in FAMILY_KEYS.items():
        if other == family:
            continue
        hit = next((k for k in state_dict if re.search(pattern, k)), None)
        if hit is not None:
            raise CheckpointMismatchError(
                f'this checkpoint is not {family}: it looks like {other} (it has key {hit!r}); '
                f'use the {other} backbone or a {family} checkpoint')


class PlainMiddleClsBackbone(MiddleClsEmbedMixin, BaseBackbone):
    """What Vim and ARM share: arch check, embedding set-up, freezing, layer ids, init.

    A subclass calls :meth:`_init_plain` in its constructor, then builds ``self.layers`` (one
    block per entry) and ``self.norm_f``, then calls ``self._init_weights()`` and
    ``self._freeze_unused()``.

    ``frozen_stages = k >= 1`` (mmpretrain ViT's): the patch embedding, ``pos_embed``,
    ``cls_token`` and blocks ``0..k-1`` get no gradient and stay in eval mode; ``k = depth`` also
    freezes ``norm_f``; 0 and -1 freeze nothing.
    """
    FAMILY = ''
    #: fields every arch preset (or arch dict) must give
    ARCH_FIELDS = ('embed_dim', 'depth', 'patch_size', 'stride', 'd_state', 'expand', 'img_size')

    def _init_plain(self, cfg: dict, in_chans: int, out_indices: Optional[Sequence[int]],
                    final_norm: bool, use_cls_token: bool, drop_rate: float,
                    with_cp: bool, frozen_stages: int = -1) -> int:
        """Check the resolved arch ``cfg``, set the common attributes (``out_indices``: default 4
        evenly spaced blocks) and build the embedding :class:`MiddleClsEmbedMixin` needs:
        ``patch_embed``, the stored square ``pretrain_grid``, ``cls_token``, ``pos_embed``
        (``[1, g*g + 1, D]``), ``pos_drop`` and the ``_pos_cache``. Returns the width ``D``."""
        missing = set(self.ARCH_FIELDS) - set(cfg)
        if missing:
            raise KeyError(f'{self.FAMILY}: arch dict lacks {sorted(missing)}')
        self.arch_settings = cfg
        self.embed_dim = dim = cfg['embed_dim']
        self.depth = self.num_layers = cfg['depth']
        self.in_chans = in_chans
        self.patch_size, self.stride = cfg['patch_size'], cfg['stride']
        self.final_norm = final_norm
        self.use_cls_token = use_cls_token
        self.out_indices = check_out_indices(
            default_out_indices(self.depth) if out_indices is None else out_indices,
            self.depth, self.FAMILY)
        self.frozen_stages = check_frozen_stages(frozen_stages, self.depth, self.FAMILY)
        self.grad_checkpointing = with_cp

        self.patch_embed = PatchEmbed(in_chans, dim, self.patch_size, self.stride)
        g = (cfg['img_size'] - self.patch_size) // self.stride + 1
        self.pretrain_grid = (g, g)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, g * g + 1, dim))
        self.pos_drop = nn.Dropout(drop_rate)
        self._pos_cache = PosEmbedCache()
        return dim

    @torch.no_grad()
    def _init_weights(self) -> None:
        """Official init (see :func:`init_plain_mamba`)."""
        init_plain_mamba(self, self.depth)

    def _frozen_parts(self):
        if self.frozen_stages < 1:
            return [], []
        modules = [self.patch_embed, self.pos_drop] + list(self.layers[:self.frozen_stages])
        if self.frozen_stages == self.depth:
            modules.append(self.norm_f)
        return modules, [self.pos_embed, self.cls_token]

    def _freeze_unused(self) -> None:
        """Parameters the dense forward never uses get ``requires_grad=False`` (DDP-safe), and
        ``frozen_stages`` is applied."""
        last = max(self.out_indices)
        for i, layer in enumerate(self.layers):
            if i > last:
                layer.requires_grad_(False)
        if not self.final_norm:
            self.norm_f.requires_grad_(False)
        if not self.use_cls_token:
            self.cls_token.requires_grad_(False)
        self._freeze_stages()

    def get_layer_id(self, name: str) -> int:
        return layer_id_for(name, self.num_layers)

    def train(self, mode: bool = True):
        self._pos_cache.clear()
        return super().train(mode)


# ----------------------------------------------------------------------------------------------
# Vim
# ----------------------------------------------------------------------------------------------


class VimBlock(nn.Module):
    """Vim's ``Block``: Add -> RMSNorm -> bidirectional mixer, returning ``(hidden, residual)``.

    ``residual_i = residual_{i-1} + drop_path(hidden_{i-1})`` (``residual_0 = x``), then
    ``hidden_i = mixer(RMSNorm(residual_i))`` (fixtures README V2).
    """

    def __init__(self, dim: int, d_state: int = 16, expand: float = 2, drop_path: float = 0.,
                 norm_eps: float = 1e-5, residual_in_fp32: bool = True, divide_out: bool = True):
        super().__init__()
        self.residual_in_fp32 = residual_in_fp32
        self.mixer = MambaMixer(dim, d_state=d_state, expand=expand,
                                directions=VIM_ORDERS, divide_out=divide_out)
        self.norm = RMSNorm(dim, eps=norm_eps)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, hidden: torch.Tensor, residual: Optional[torch.Tensor],
                hw: Optional[Tuple[int, int]] = None, cls_index: Optional[int] = None):
        if residual is not None:
            hidden = self.drop_path(hidden)
        normed, residual = self.norm(hidden, residual, prenorm=True,
                                     residual_in_fp32=self.residual_in_fp32)
        return self.mixer(normed, hw, cls_index), residual


class Vim(PlainMiddleClsBackbone):
    """Vision Mamba backbone returning NCHW maps at stride ``stride`` (16, or 8 for ``*_s8``).

    Args:
        arch: preset name in :attr:`arch_zoo` or a dict with the same fields.
        embed_dim, depth, patch_size, stride, d_state, expand: override the preset.
        img_size: training size of the stored ``pos_embed`` (224 for every release), which
            defines its square grid ``(img_size - patch) // stride + 1``; inputs may be any size.
        in_chans: input channels.
        out_indices: blocks whose outputs are returned (default: 4 evenly spaced, ending with
            the last). Blocks after the last index are not run and are frozen.
        feature_source: ``'residual'`` or ``'hidden'`` (see module docstring).
        final_norm: apply ``norm_f`` to every output map (otherwise ``norm_f`` is frozen, as the
            dense forward does not use it).
        use_cls_token: keep the pretrained middle cls token in the sequence (dropped from the
            outputs); False leaves it out and freezes it.
        drop_rate: dropout after the position embedding.
        drop_path_rate: stochastic depth, Vim's ``[0] + linspace(0, rate, depth)`` schedule.
        norm_eps, residual_in_fp32, divide_out: as the official ``VisionMamba``.
        frozen_stages: -1 or 0 (none), or ``k``: patch / position embeddings, cls token and
            blocks ``0..k-1`` get no gradient and stay in eval mode (``k = depth``: ``norm_f``
            too), as mmpretrain's ViT.
        with_cp: per-block activation checkpointing.
        init_cfg: ``dict(type='Pretrained', checkpoint=..., [prefix=...])`` or None.
    """
    arch_zoo = {
        'tiny': dict(embed_dim=192, depth=24, stride=16, **_VIM_COMMON),
        'small': dict(embed_dim=384, depth=24, stride=16, **_VIM_COMMON),
        'base': dict(embed_dim=768, depth=24, stride=16, **_VIM_COMMON),
        'tiny_s8': dict(embed_dim=192, depth=24, stride=8, **_VIM_COMMON),
        'small_s8': dict(embed_dim=384, depth=24, stride=8, **_VIM_COMMON),
    }
    ALLOWED_MISSING = ()
    ALLOWED_UNEXPECTED = ('head.*',)
    FAMILY = 'Vim'

    def __init__(self, arch: Union[str, dict] = 'tiny', embed_dim: Optional[int] = None,
                 depth: Optional[int] = None, patch_size: Optional[int] = None,
                 stride: Optional[int] = None, d_state: Optional[int] = None,
                 expand: Optional[float] = None, img_size: Optional[int] = None,
                 in_chans: int = 3, out_indices: Optional[Sequence[int]] = None,
                 feature_source: str = 'residual', final_norm: bool = False,
                 use_cls_token: bool = True, drop_rate: float = 0., drop_path_rate: float = 0.1,
                 norm_eps: float = 1e-5, residual_in_fp32: bool = True, divide_out: bool = True,
                 frozen_stages: int = -1, with_cp: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        cfg = resolve_arch(self.arch_zoo, arch, dict(
            embed_dim=embed_dim, depth=depth, patch_size=patch_size, stride=stride,
            d_state=d_state, expand=expand, img_size=img_size), self.FAMILY)
        if feature_source not in ('residual', 'hidden'):
            raise ValueError(f"Vim: feature_source must be 'residual' or 'hidden', "
                             f'got {feature_source!r}')
        self.feature_source = feature_source
        self.residual_in_fp32 = residual_in_fp32
        dim = self._init_plain(cfg, in_chans, out_indices, final_norm, use_cls_token, drop_rate,
                               with_cp, frozen_stages)
        dpr = drop_path_schedule(drop_path_rate, self.depth)
        self.layers = nn.ModuleList([
            VimBlock(dim, cfg['d_state'], cfg['expand'], drop_path=dpr[i], norm_eps=norm_eps,
                     residual_in_fp32=residual_in_fp32, divide_out=divide_out)
            for i in range(self.depth)])
        self.drop_path = DropPath(dpr[-1]) if dpr[-1] > 0. else nn.Identity()
        self.norm_f = RMSNorm(dim, eps=norm_eps)
        self._init_weights()
        self._freeze_unused()

    # ----- forward -------------------------------------------------------------------------
    def _layer(self, i: int, hidden, residual, hw, cls_index):
        layer = self.layers[i]
        if getattr(self, 'grad_checkpointing', False) and self.training and \
                torch.is_grad_enabled():
            return cp.checkpoint(layer, hidden, residual, hw, cls_index, use_reentrant=False)
        return layer(hidden, residual, hw, cls_index)

    def forward_layers(self, x: torch.Tensor, dense: bool = True,
                       keep: Optional[Sequence[int]] = None, last: Optional[int] = None):
        """Run blocks ``0..last``; returns ``(outs, hidden, residual, hw, cls_index)`` with
        ``outs[i] = (hidden_i, residual_i)`` for ``i`` in ``keep`` (all when None), exactly the
        two outputs of the official ``Block`` ``i``."""
        check_image(x, self.in_chans, self.FAMILY)
        last = self.depth - 1 if last is None else last
        hidden, hw, cls_index = self.embed(x, dense=dense)
        residual = None
        outs = {}
        for i in range(last + 1):
            hidden, residual = self._layer(i, hidden, residual, hw, cls_index)
            if keep is None or i in keep:
                outs[i] = (hidden, residual)
        return outs, hidden, residual, hw, cls_index

    def _stream_after(self, i: int, outs: dict) -> torch.Tensor:
        """The residual stream after block ``i``, as the official code reads it: the residual
        output of block ``i + 1`` (its drop path applied to ``hidden_i``), and for the last block
        ``hidden + residual`` (``last_layer_process='add'``)."""
        hidden, residual = outs[i]
        if i + 1 in outs:
            return outs[i + 1][1]
        if i + 1 < self.depth:  # block i + 1 does not run: its add alone
            return residual + self.layers[i + 1].drop_path(hidden)
        return residual + hidden

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``(B, C, H, W)`` -> tuple of ``(B, D, ceil(H/s), ceil(W/s))`` maps, ``s = stride``."""
        keep = set(self.out_indices)
        if self.feature_source == 'residual':
            keep |= {i + 1 for i in self.out_indices}
        outs, _, _, hw, cls_index = self.forward_layers(x, dense=True, keep=keep,
                                                        last=max(self.out_indices))
        maps = []
        for i in self.out_indices:
            hidden = outs[i][0]
            if self.feature_source == 'residual':
                feat = self._stream_after(i, outs).to(hidden.dtype)
            else:
                feat = hidden
            if self.final_norm:
                feat = self.norm_f(feat)
            maps.append(tokens_to_map(feat, hw, cls_index))
        return tuple(maps)

    def forward_cls(self, x: torch.Tensor) -> torch.Tensor:
        """The official ``forward_features`` output: ``norm_f(hidden + residual)`` at the middle
        cls token, ``(B, D)``, with the official (unpadded-top/left) patch geometry."""
        if not self.use_cls_token:
            raise RuntimeError('Vim.forward_cls needs use_cls_token=True')
        _, hidden, residual, _, cls_index = self.forward_layers(x, dense=False, keep=())
        out = self.norm_f(self.drop_path(hidden), residual, prenorm=False,
                          residual_in_fp32=self.residual_in_fp32)
        return out[:, cls_index]

    # ----- checkpoints ---------------------------------------------------------------------
    @classmethod
    def convert_official(cls, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Official Vim names are ours; only the family is checked (``head.*`` is allowed
        unexpected, ``pos_embed`` is resized by :meth:`adapt_state_dict`; RoPE checkpoints are
        refused rather than loaded without their rotary embedding)."""
        family_guard(state_dict, cls.FAMILY)
        if any(k.startswith('rope.') for k in state_dict):
            raise CheckpointMismatchError(
                'this Vim checkpoint was trained with RoPE (it has rope.freqs_*, if_rope=True), '
                'which mmvssm does not implement; the released midclstok checkpoints have none')
        return dict(state_dict)

    def adapt_state_dict(self, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Resize the checkpoint's ``pos_embed`` (cls kept at ``M // 2``) to this model's grid."""
        return adapt_middle_cls_pos_embed(state_dict, self.pos_embed, self.FAMILY)


@torch.no_grad()
def init_plain_mamba(model: nn.Module, depth: int) -> None:
    """``VisionMamba.__init__``'s init, shared by Vim and ARM (ARM's fine-tuning model is a fork
    of Vim's): patch_embed ``segm_init_weights`` (lecun-normal conv, zero bias), pos/cls
    trunc_normal(0.02), mamba-ssm's mixer init, norms to identity, then the GPT-2 style
    ``_init_weights``: Linear biases zero (except ``dt_proj*``, ``_no_reinit``), ``out_proj``
    kaiming-uniform(a=sqrt(5)) / sqrt(depth)."""
    lecun_normal_(model.patch_embed.proj.weight)
    nn.init.zeros_(model.patch_embed.proj.bias)
    trunc_normal_(model.pos_embed, std=.02)
    trunc_normal_(model.cls_token, std=.02)
    for m in model.modules():
        if isinstance(m, MambaMixer):
            m.reset_parameters()
        elif isinstance(m, (RMSNorm, nn.LayerNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if getattr(m, 'bias', None) is not None:
                nn.init.zeros_(m.bias)
    for m in model.modules():
        if isinstance(m, nn.Linear) and m.bias is not None and \
                not getattr(m.bias, '_no_reinit', False):
            nn.init.zeros_(m.bias)
        if isinstance(m, MambaMixer):
            nn.init.kaiming_uniform_(m.out_proj.weight, a=5 ** 0.5)
            m.out_proj.weight /= depth ** 0.5
