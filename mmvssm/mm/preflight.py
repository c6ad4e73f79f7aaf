"""Pre-flight checks for ``tools/train.py`` / ``tools/test.py``: fail early, name the file.

Without them, a missing data root or a wrong annotation file surfaces minutes later as an
``IndexError``/``KeyError`` deep in a dataset, an empty dataset, or a ``FileNotFoundError``
after the runner has already created a new timestamped folder in the work dir. :func:`preflight`
runs on the config *before* the runner is built (nothing is written), checks every input the
run will read, and raises one :class:`PreflightError` listing all problems, each with the
config key and the absolute path:

* datasets of the dataloaders the run uses (train: ``train_dataloader`` + ``val_dataloader``
  when validation is configured; test: ``test_dataloader``), through dataset wrappers
  (``dataset=``, ``datasets=[...]``): ``data_root`` exists; ``ann_file`` exists and, for a
  ``.json`` file, has the COCO schema (``images`` / ``annotations`` / ``categories`` lists whose
  entries carry the keys mmdet reads; at least one of the config's ``metainfo.classes`` among the
  category names, otherwise mmdet silently builds an empty dataset); the ``data_prefix`` folders
  exist and are not empty (ADE20K: ``images/<split>`` and ``annotations/<split>``);
* the evaluators' ``ann_file`` (``CocoMetric``), same schema check;
* checkpoints: ``load_from``, the test ``checkpoint`` argument, every local ``init_cfg``
  ``Pretrained`` checkpoint and ``pretrained=`` path of the model, and on ``--resume`` the given
  file or the one named by ``<work_dir>/last_checkpoint``: each exists and opens as a torch
  checkpoint under the tools' ``weights_only`` allow-list (``mmap``: the tensors are not read);
  a resume checkpoint is an mmengine training checkpoint (``meta``, ``state_dict``,
  ``message_hub``), not weights only. URLs (``http(s)://``, ``open-mmlab://``, ...) are not
  checked (they are downloaded into the torch hub cache).

Bad *contents* of individual images are found while loading; :func:`explain_data_errors` makes
such errors name the file: mmcv already raises ``failed to load image: <path>`` for an
undecodable image, but not for an empty image file (an OpenCV assertion) or a broken label PNG
(``OSError: image file is truncated``). It wraps ``mmengine.dataset.Compose.__call__`` (the
pipeline every mmdet / mmseg dataset runs) so that any exception raised by a transform is
re-raised as :class:`DataLoadError` naming the transform and the sample's files, chained to the
original exception; a failure to read a file (in a ``Load*`` transform, or an ``OSError`` / PIL
error) asks whether the file is corrupt, any other names the transform's pipeline step as a
possible config error. The tools call it; ``import mmvssm`` does not.

Never imports mmdet or mmseg.
"""
import json
import os
import os.path as osp
import re
from typing import Iterable, List, Optional, Tuple

from ..utils.checkpoint import is_remote, load_checkpoint_file

#: COCO keys mmdet's ``CocoDataset`` / ``CocoMetric`` read from each entry.
COCO_REQUIRED = {
    'images': ('id', 'file_name', 'width', 'height'),
    'annotations': ('id', 'image_id', 'category_id', 'bbox'),
    'categories': ('id', 'name'),
}
#: Annotation json files larger than this are only checked for existence and a leading '{'.
MAX_JSON_BYTES = 256 * 1024 * 1024
#: Legacy (pre-zip) checkpoints larger than this are only checked for a pickle header (zip
#: checkpoints of any size are opened with ``mmap``).
MAX_LEGACY_CKPT_BYTES = 256 * 1024 * 1024
#: What mmengine's ``Runner.resume`` reads besides the weights (``meta.epoch`` / ``meta.iter``).
RESUME_KEYS = ('meta', 'state_dict', 'message_hub')


class PreflightError(RuntimeError):
    """One or more inputs of a run are missing or malformed; ``problems`` lists them."""

    def __init__(self, problems: List[str], config: Optional[str] = None):
        self.problems = list(problems)
        where = f' in {config}' if config else ''
        lines = '\n'.join(f'  - {p}' for p in self.problems)
        super().__init__(f'preflight: {len(self.problems)} problem(s){where} '
                         f'(nothing was written to the work dir):\n{lines}')


class DataLoadError(RuntimeError):
    """A data pipeline transform failed on a sample; the message names the sample's files."""


def _abs(path: str) -> str:
    return osp.abspath(osp.expanduser(path))


def _join(root: Optional[str], path: str) -> str:
    """mmengine's rule: a relative ``ann_file`` / prefix is joined to ``data_root``."""
    if root and not osp.isabs(path) and not is_remote(root):
        return osp.join(root, path)
    return path


# ----------------------------------------------------------------------------------------------
# COCO schema
# ----------------------------------------------------------------------------------------------
def check_coco_json(path: str, classes: Optional[Iterable[str]] = None,
                    annotations: bool = True) -> List[str]:
    """Problems of a COCO instances file (empty list: fine). ``path`` must exist.

    ``annotations=False``: an image-info file without ``"annotations"`` is fine (COCO test-dev,
    evaluated with ``format_only=True``)."""
    size = osp.getsize(path)
    if size == 0:
        return [f'annotation file is empty: {_abs(path)}']
    if size > MAX_JSON_BYTES:  # only the first character of a very large file
        with open(path, 'rb') as f:
            head = f.read(64).lstrip()
        return [] if head.startswith(b'{') else [
            f'annotation file is not a JSON object (COCO format expected): {_abs(path)}']
    try:
        with open(path, 'rb') as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        return [f'annotation file is not valid JSON ({e}): {_abs(path)}']
    if not isinstance(data, dict):
        return [f'annotation file is a JSON {type(data).__name__}, not a COCO object with '
                f'"images", "annotations", "categories": {_abs(path)}']
    problems = []
    missing = [k for k in COCO_REQUIRED if k not in data and (annotations or k != 'annotations')]
    if missing:
        problems.append(f'annotation file lacks the COCO key(s) {missing} (has '
                        f'{sorted(data)[:8]}): {_abs(path)}')
    for key, fields in COCO_REQUIRED.items():
        items = data.get(key)
        if key not in data:
            continue
        if not isinstance(items, list):
            problems.append(f'"{key}" must be a list, got {type(items).__name__}: {_abs(path)}')
            continue
        for i, item in enumerate(items):
            lacking = [f for f in fields if not isinstance(item, dict) or f not in item]
            if lacking:
                problems.append(f'"{key}"[{i}] lacks {lacking} (COCO needs {list(fields)}): '
                                f'{_abs(path)}')
                break
    if not problems and not data['images']:
        problems.append(f'annotation file has no images: {_abs(path)}')
    if not problems and classes is not None:
        names = {c.get('name') for c in data['categories']}
        classes = list(classes)
        if not any(c in names for c in classes):
            problems.append(f'none of the config classes {classes} is a category of '
                            f'{_abs(path)} (its categories: {sorted(map(str, names))[:10]}); '
                            'the dataset would be empty')
    return problems


# ----------------------------------------------------------------------------------------------
# datasets, evaluators, checkpoints
# ----------------------------------------------------------------------------------------------
def _leaf_datasets(ds_cfg, key: str) -> List[Tuple[str, dict]]:
    """(config key, dataset cfg) of the real datasets under wrappers."""
    if not isinstance(ds_cfg, dict):
        return []
    if 'dataset' in ds_cfg and isinstance(ds_cfg['dataset'], dict):
        return _leaf_datasets(ds_cfg['dataset'], key + '.dataset')
    if 'datasets' in ds_cfg and isinstance(ds_cfg['datasets'], (list, tuple)):
        out = []
        for i, d in enumerate(ds_cfg['datasets']):
            out += _leaf_datasets(d, f'{key}.datasets[{i}]')
        return out
    return [(key, ds_cfg)]


def _check_dataset(key: str, ds: dict, annotations: bool = True) -> List[str]:
    problems = []
    root = ds.get('data_root')
    if root and not is_remote(root) and not osp.isdir(root):
        hint = ''
        if 'toy' in str(root):
            hint = ' (generate it: python tools/make_toy_data.py --out data/toy)'
        return [f'{key}.data_root: data root not found: {_abs(root)}{hint}']
    ann = ds.get('ann_file')
    if ann:
        path = _join(root, ann)
        if not is_remote(path):
            if not osp.isfile(path):
                problems.append(f'{key}.ann_file: annotation file not found: {_abs(path)}')
            elif path.endswith('.json'):
                meta = ds.get('metainfo') or {}
                classes = meta.get('classes') if isinstance(meta, dict) else None
                problems += [f'{key}.ann_file: {p}'
                             for p in check_coco_json(path, classes, annotations)]
    prefix = ds.get('data_prefix') or {}
    if isinstance(prefix, dict):
        for name, sub in prefix.items():
            if not sub or not isinstance(sub, str):
                continue
            path = _join(root, sub)
            if is_remote(path):
                continue
            if not osp.isdir(path):
                problems.append(f'{key}.data_prefix.{name}: folder not found: {_abs(path)}')
            elif not any(True for _ in os.scandir(path)):
                problems.append(f'{key}.data_prefix.{name}: folder is empty: {_abs(path)}')
    return problems


def _evaluators(ev) -> List[dict]:
    if isinstance(ev, dict):
        if 'metrics' in ev and isinstance(ev['metrics'], (list, tuple)):  # Evaluator wrapper
            return _evaluators(list(ev['metrics']))
        return [ev]
    if isinstance(ev, (list, tuple)):
        return [e for e in ev if isinstance(e, dict)]
    return []


def _format_only(ev) -> bool:
    """Whether every metric of an evaluator only writes results (COCO test-dev submissions)."""
    metrics = _evaluators(ev)
    return bool(metrics) and all(m.get('format_only') for m in metrics)


def _check_evaluator(key: str, ev) -> List[str]:
    problems = []
    annotations = not _format_only(ev)
    for i, e in enumerate(_evaluators(ev)):
        ann = e.get('ann_file')
        if not ann or is_remote(ann):
            continue
        k = key if isinstance(ev, dict) else f'{key}[{i}]'
        if not osp.isfile(ann):
            problems.append(f'{k}.ann_file: annotation file not found: {_abs(ann)}')
        elif ann.endswith('.json'):
            problems += [f'{k}.ann_file: {p}'
                         for p in check_coco_json(ann, annotations=annotations)]
    return problems


def _load_checkpoint(path: str):
    """``path`` loaded as the tools load it (:func:`~mmvssm.utils.checkpoint.load_checkpoint_file`:
    ``weights_only`` + mmvssm's allow-list), cheaply.

    A zip checkpoint (``torch.save``'s format) is loaded with ``mmap``: only its pickle is read.
    A legacy (pre-zip) pickle is loaded only up to :data:`MAX_LEGACY_CKPT_BYTES`, otherwise
    ``None`` (its header was checked). Raises ``ValueError`` for anything else.
    """
    import warnings

    with open(path, 'rb') as f:
        head = f.read(16)
    zipped = head.startswith(b'PK\x03\x04')
    if not zipped and not head.startswith(b'\x80'):  # b'\x80': a pickle, torch's legacy format
        raise ValueError(f'neither a torch.save zip archive nor a legacy torch pickle; '
                         f'starts with {head!r}')
    if not zipped and osp.getsize(path) > MAX_LEGACY_CKPT_BYTES:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return load_checkpoint_file(path, map_location='cpu', mmap=zipped)


def _check_checkpoint(key: str, path, resume: bool = False) -> List[str]:
    """Problems of a local checkpoint: missing, empty, unreadable; with ``resume``, not an
    mmengine training checkpoint (what ``Runner.resume`` reads)."""
    if not path or not isinstance(path, str) or is_remote(path):
        return []
    path = osp.expanduser(path)  # as mmengine's and mmvssm's loaders
    if not osp.isfile(path):
        return [f'{key}: checkpoint not found: {_abs(path)}']
    if osp.getsize(path) == 0:
        return [f'{key}: checkpoint file is empty: {_abs(path)}']
    import pickle
    try:
        ckpt = _load_checkpoint(path)
    except pickle.UnpicklingError as e:
        detail = re.search(r'WeightsUnpickler error: (.*?)(?: Please use|$)', str(e), re.M)
        detail = detail.group(1) if detail else str(e).strip().splitlines()[0]
        return [f'{key}: checkpoint pickles an object outside the weights-only allow-list '
                f'({detail}): {_abs(path)}; if the file is trusted, add the class to '
                'mmvssm/utils/safe_load.py, or re-save only its tensors']
    except Exception as e:  # noqa: BLE001  (truncated zip, not a checkpoint, ...)
        e = e.__cause__ or e  # torch.load's own error, which the loader wraps to name the file
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0].split('. ')[0]
        return [f'{key}: not a readable torch checkpoint: {_abs(path)} ({reason})']
    if not resume or ckpt is None:
        return []
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    lacks = [k for k in RESUME_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    lacks += [f'meta.{k}' for k in ('epoch', 'iter')
              if 'meta' not in lacks and not (isinstance(meta, dict) and k in meta)]
    if not lacks:
        return []
    has = sorted(map(str, ckpt))[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
    return [f'{key}: not an mmengine training checkpoint (lacks {lacks}; has {has}): '
            f'{_abs(path)}; --resume continues a run of tools/train.py from its own checkpoint. '
            f'To start a new run from these weights, use --cfg-options load_from={_abs(path)} '
            'instead']


def _model_checkpoints(obj, key: str = 'model') -> List[Tuple[str, str]]:
    """(config key, path) of ``init_cfg`` Pretrained checkpoints and ``pretrained`` strings."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            sub = f'{key}.{k}'
            if k == 'init_cfg':
                for j, ic in enumerate(v if isinstance(v, (list, tuple)) else [v]):
                    if isinstance(ic, dict) and ic.get('type') == 'Pretrained':
                        ik = sub if isinstance(v, dict) else f'{sub}[{j}]'
                        out.append((f'{ik}.checkpoint', ic.get('checkpoint')))
            elif k == 'pretrained' and isinstance(v, str):
                out.append((sub, v))
            else:
                out += _model_checkpoints(v, sub)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out += _model_checkpoints(v, f'{key}[{i}]')
    return out


def preflight(cfg, mode: str = 'train', checkpoint: Optional[str] = None,
              config_name: Optional[str] = None) -> None:
    """Check the inputs of a ``mode`` ('train' or 'test') run of ``cfg``; raise on problems.

    ``checkpoint``: the weights file of a test run (``tools/test.py CONFIG CHECKPOINT``).
    Reads only; call it before ``Runner.from_cfg`` so a failure leaves the work dir untouched.
    """
    if mode not in ('train', 'test'):
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    get = cfg.get
    problems: List[str] = []

    loaders = []
    if mode == 'train':
        loaders.append('train_dataloader')
        if get('val_cfg') and get('val_evaluator') and get('val_dataloader'):
            loaders.append('val_dataloader')
    else:
        loaders.append('test_dataloader')
    # a format_only test run (COCO test-dev) reads image infos without annotations
    annotations = not (mode == 'test' and _format_only(get('test_evaluator')))
    for name in loaders:
        loader = get(name)
        if loader is None:
            problems.append(f'{name} is not set in the config')
            continue
        for key, ds in _leaf_datasets(loader.get('dataset'), f'{name}.dataset'):
            problems += _check_dataset(key, ds, annotations)
    evaluators = ['val_evaluator'] if 'val_dataloader' in loaders else []
    if mode == 'test':
        evaluators = ['test_evaluator']
    for name in evaluators:
        problems += _check_evaluator(name, get(name))

    if mode == 'test':
        problems += _check_checkpoint('checkpoint', checkpoint)
    load_from = get('load_from')
    resume = mode == 'train' and get('resume')
    if resume and load_from:  # tools/train.py --resume PATH
        problems += _check_checkpoint('resume', load_from, resume=True)
    elif load_from and load_from != checkpoint:
        problems += _check_checkpoint('load_from', load_from)
    if resume and not load_from and get('work_dir'):
        pointer = osp.join(get('work_dir'), 'last_checkpoint')
        if osp.isfile(pointer):
            with open(pointer) as f:
                last = f.read().strip()
            if not last:  # mmengine would "resume from ''" and fail naming no file
                problems.append(f'resume: {_abs(pointer)} names no checkpoint (it is empty: a '
                                'save was interrupted?); give one with --resume PATH, or delete '
                                'the file to start a new run')
            problems += [p + f' (named by {_abs(pointer)})'
                         for p in _check_checkpoint('resume', last, resume=True)]
    if mode == 'train':  # a test run loads its weights from the checkpoint, not init_cfg
        for key, path in _model_checkpoints(get('model')):
            problems += _check_checkpoint(key, path)

    if problems:
        raise PreflightError(problems, config_name or getattr(cfg, 'filename', None))


# ----------------------------------------------------------------------------------------------
# errors while loading samples
# ----------------------------------------------------------------------------------------------
_FILE_KEYS = ('img_path', 'seg_map_path', 'filename', 'ann_path')


def _is_read_error(transform, exc: BaseException) -> bool:
    """Whether a transform's error comes from reading / decoding a file (not from its settings):
    raised in a loading transform (``LoadImageFromFile``, ``LoadAnnotations``, ...), or an
    ``OSError`` / PIL error anywhere."""
    return (type(transform).__name__.startswith('Load') or isinstance(exc, OSError)
            or type(exc).__module__.split('.')[0] == 'PIL')


def explain_data_errors() -> None:
    """Make every data-pipeline error name the sample's files (idempotent, process-wide).

    Wraps ``mmengine.dataset.Compose.__call__``: an exception from a transform is re-raised as
    :class:`DataLoadError` ("<Transform> failed on img_path=..., seg_map_path=...: <error>
    (<hint>)"), chained to the original. Successful calls are unchanged.
    """
    from mmengine.dataset import Compose
    if getattr(Compose.__call__, '_mmvssm_explained', False):
        return

    def __call__(self, data):
        # mmengine's Compose.__call__, with the failing transform and the files named
        files = {k: data.get(k) for k in _FILE_KEYS if isinstance(data, dict) and data.get(k)}
        for i, t in enumerate(self.transforms):
            try:
                data = t(data)
            except DataLoadError:
                raise
            except Exception as e:
                if not files:
                    raise
                name = type(t).__name__
                where = ', '.join(f'{k}={_abs(v) if isinstance(v, str) else v}'
                                  for k, v in files.items())
                hint = ('is the file corrupt or truncated?' if _is_read_error(t, e) else
                        f'not a file-reading error: check the {name} settings, pipeline[{i}], '
                        'in the config')
                error = f'{type(e).__name__}: {str(e).strip()}'
                raise DataLoadError(f'{name} failed on {where}: {error} ({hint})') from e
            if data is None:
                return None
        return data

    __call__._mmvssm_explained = True
    Compose.__call__ = __call__


__all__ = ['preflight', 'check_coco_json', 'explain_data_errors', 'PreflightError',
           'DataLoadError', 'COCO_REQUIRED']
