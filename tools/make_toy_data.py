"""Generate the toy COCO / ADE20K datasets (thin CLI over mmvssm/datasets/toy.py).

    python tools/make_toy_data.py --out data/toy [--seed 0] [--num-train 120]
        [--num-val 30] [--only coco|ade] [--force]

Writes ``<out>/coco`` (COCO 2017 layout) and ``<out>/ade/ADEChallengeData2016``
(ADE20K layout); see ``mmvssm/datasets/toy.py`` for what is in them. Skips a
dataset whose ``toy_manifest.json`` matches (generator version, seed, counts)
unless ``--force``. A folder holding files but no toy manifest (a real dataset) is never
replaced: exit status 2 with the reason.
"""
import argparse
import importlib.util
import os.path as osp
import sys
import time

_TOY = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'mmvssm',
                'datasets', 'toy.py')


def _load_toy():
    # Load the generator by path: ``import mmvssm`` would import torch and
    # register the models, none of which data generation needs.
    spec = importlib.util.spec_from_file_location('_mmvssm_toy_data', _TOY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _describe(res) -> str:
    lines = []
    what = 'skipped (manifest matches; --force to regenerate)' \
        if res['skipped'] else f'wrote in {res["seconds"]:.2f} s'
    lines.append(f'[{res["kind"]}] {res["data_root"]}: {what}')
    for split, st in res['stats'].items():
        sz = st.get('sizes', {})
        size = (f'w {sz["width"][0]}-{sz["width"][1]}, '
                f'h {sz["height"][0]}-{sz["height"][1]}') if sz else '-'
        if res['kind'] == 'coco':
            ipi = st['instances_per_image']
            lines.append(
                f'  {split}: {st["num_images"]} images ({size}), '
                f'{st["num_instances"]} instances + {st["num_crowd"]} crowd, '
                f'per image {ipi["min"]}-{ipi["max"]} (mean {ipi["mean"]}), '
                f'per class {st["per_class"]}, areas {st["area_bins"]}')
        else:
            frac = {k: round(v * 100, 1) for k, v in st['pixel_fraction'].items()}
            lines.append(f'  {split}: {st["num_images"]} images ({size}), '
                         f'pixel % {frac}')
    if res['kind'] == 'coco':
        for split, path in res['ann_files'].items():
            lines.append(f'  {split} annotations: {path}')
    return '\n'.join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/toy', help='output root')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-train', type=int, default=None,
                        help='training images per dataset (default 120)')
    parser.add_argument('--num-val', type=int, default=None,
                        help='validation images per dataset (default 30)')
    parser.add_argument('--only', choices=['coco', 'ade'], default=None)
    parser.add_argument('--force', action='store_true',
                        help='regenerate even when the manifest matches (never replaces a '
                             'folder without a toy manifest, such as a real dataset)')
    args = parser.parse_args(argv)

    toy = _load_toy()
    num_train = toy.DEFAULT_NUM_TRAIN if args.num_train is None else args.num_train
    num_val = toy.DEFAULT_NUM_VAL if args.num_val is None else args.num_val
    t0 = time.perf_counter()
    for kind, fn in (('coco', toy.make_coco), ('ade', toy.make_ade)):
        if args.only in (None, kind):
            try:
                res = fn(args.out, seed=args.seed, num_train=num_train,
                         num_val=num_val, force=args.force)
            except FileExistsError as e:
                print(f'make_toy_data: {e}', file=sys.stderr)
                return 2
            print(_describe(res), flush=True)
    print(f'total {time.perf_counter() - t0:.2f} s (seed {args.seed}, '
          f'generator v{toy.GENERATOR_VERSION})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
