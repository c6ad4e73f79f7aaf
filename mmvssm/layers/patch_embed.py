"""Patch embedding for plain (ViT-like) backbones: a strided conv that accepts any input size."""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    """``Conv2d(in_chans, embed_dim, patch_size, stride)`` -> tokens ``(B, h*w, D)`` and ``(h, w)``.

    The parameter names (``proj.weight``/``proj.bias``) are those of Vim's and ARM's ``PatchEmbed``.

    Two geometries (``forward(x, dense=...)``):

    * ``dense=False`` (the official one): zero padding at the bottom/right only when needed so
      that ``(H - patch) % stride == 0``; grid ``ceil((H - patch) / stride) + 1``. For
      ``stride == patch`` this is ``ceil(H / stride)``; it reproduces the official grid
      (e.g. 27x27 for a stride-8 model at 224) whenever the official code accepts the input.
    * ``dense=True`` (used for dense prediction): additionally pads ``(patch - stride) // 2`` on
      the top/left, so that the grid is exactly ``ceil(H / stride) x ceil(W / stride)`` and token
      ``k`` is centred on the stride-``stride`` cell ``k`` (only differs from the official one
      when ``stride < patch``, i.e. the stride-8 Vim models).
    """

    def __init__(self, in_chans: int = 3, embed_dim: int = 768, patch_size: int = 16,
                 stride: int = 16):
        super().__init__()
        if stride > patch_size:
            raise ValueError(f'PatchEmbed: stride {stride} larger than patch_size {patch_size} '
                             'would skip pixels')
        self.in_chans = in_chans
        self.patch_size = patch_size
        self.stride = stride
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=stride)

    def grid_size(self, h: int, w: int, dense: bool = True) -> Tuple[int, int]:
        """Token grid for an ``h x w`` input."""
        if dense:
            return -(-h // self.stride), -(-w // self.stride)
        p, s = self.patch_size, self.stride
        return -(-max(h - p, 0) // s) + 1, -(-max(w - p, 0) // s) + 1

    def forward(self, x: torch.Tensor, dense: bool = True) -> Tuple[torch.Tensor, Tuple[int, int]]:
        h, w = x.shape[-2:]
        gh, gw = self.grid_size(h, w, dense)
        p, s = self.patch_size, self.stride
        top = (p - s) // 2 if dense else 0
        need_h, need_w = (gh - 1) * s + p, (gw - 1) * s + p
        pad = (top, need_w - w - top, top, need_h - h - top)  # left, right, top, bottom
        if any(pad):
            x = F.pad(x, pad)
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), (gh, gw)
