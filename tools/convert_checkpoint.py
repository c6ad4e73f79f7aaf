"""Convert an official checkpoint (Vim, VMamba, MambaOut, ARM) into an mmvssm backbone state dict.

    python tools/convert_checkpoint.py SRC DST --family vim --arch tiny
    python tools/convert_checkpoint.py SRC DST --name vmamba_tiny_s1l8     # a model-zoo entry
    python tools/convert_checkpoint.py SRC DST --family vssm --arch '{"depths": [1, 1, 2, 1], ...}'

SRC is a local file or a URL (``--name`` alone uses the zoo URL when SRC is ``-``). The weights
are renamed by the backbone's ``convert_official`` and loaded **strictly** into
``<Family>(arch=...)`` (only the classifier head, and the det/seg output norms absent from
classification files, may differ); DST then holds ``{'state_dict': backbone.state_dict(),
'meta': {...}}``, loadable with ``init_cfg=dict(type='Pretrained', checkpoint=DST)``.
"""
import argparse
import importlib
import json
import os
import sys
from typing import Optional

import torch

FAMILY_CLASSES = {'vim': ('mmvssm.backbones.vim', 'Vim'),
                  'vssm': ('mmvssm.backbones.vssm', 'VSSM'),
                  'mambaout': ('mmvssm.backbones.mambaout', 'MambaOut'),
                  'arm': ('mmvssm.backbones.arm', 'ARM')}


def backbone_class(family: str):
    if family not in FAMILY_CLASSES:
        raise ValueError(f'unknown family {family!r}; choose one of {sorted(FAMILY_CLASSES)}')
    module, name = FAMILY_CLASSES[family]
    return getattr(importlib.import_module(module), name)


def parse_arch(arch: str):
    """A preset name, or a JSON dict of arch settings."""
    return json.loads(arch) if arch.lstrip().startswith('{') else arch


def convert(src: str, dst: str, family: Optional[str] = None, arch=None, name: Optional[str] = None,
            key: Optional[str] = None) -> dict:
    """Convert ``src`` into ``dst``; returns the load report (``missing`` / ``unexpected``)."""
    from mmvssm import model_zoo
    entry = model_zoo.get(name) if name else None
    if entry is not None:
        family = family or entry.family
        arch = arch if arch is not None else entry.arch
        key = key if key is not None else entry.key
        if src in ('-', ''):
            src = model_zoo.checkpoint_url(name)
    if family is None or arch is None:
        raise ValueError('give --family and --arch, or --name of a model-zoo entry')
    cls = backbone_class(family)
    backbone = cls(arch=arch, init_cfg=None)
    report = backbone.load_official(src, key=key)
    meta = dict(family=family, backbone=cls.__name__, arch=arch, source=os.path.basename(src),
                zoo_name=name, allowed_missing=report['missing'],
                dropped=report['unexpected'], initialised=report['initialised'],
                resized={k: [list(a), list(b)] for k, (a, b) in report['resized'].items()},
                note='random-init (identity) output norms' if report['missing'] else '')
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    torch.save({'state_dict': backbone.state_dict(), 'meta': meta}, dst)
    return report


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('src', help="official checkpoint (path or URL; '-' with --name: the zoo URL)")
    p.add_argument('dst', help='output file')
    p.add_argument('--family', choices=sorted(FAMILY_CLASSES))
    p.add_argument('--arch', type=parse_arch, help='arch preset name or JSON dict of settings')
    p.add_argument('--name', help='model-zoo name (sets family, arch and key)')
    p.add_argument('--key', help="top-level key of the weights ('model', 'model_ema', ...); "
                                 'default: automatic')
    args = p.parse_args(argv)
    sys.path.insert(0, os.getcwd())
    report = convert(args.src, args.dst, args.family, args.arch, args.name, args.key)
    print(f'saved {args.dst}; dropped {len(report["unexpected"])} keys '
          f'{report["unexpected"][:6]}; not in the source (kept as initialised): '
          f'{report["missing"] + report["initialised"]}; resized: {report["resized"]}')


if __name__ == '__main__':
    main()
