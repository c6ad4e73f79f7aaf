"""Where the official ImageNet-1K checkpoints of the four families live (framework-free data).

Every entry names the backbone it loads into (``family`` + ``arch`` preset), the download URL
(GitHub release or Hugging Face ``resolve`` link, from the research notes ``anchors.md`` §1.7,
§2.7, §3.1, §4.3 only), the file name, the top-level key holding the weights and the published
top-1. Entries whose location is not confirmed say so (``verified=False`` and a note); ARM's
file names are unknown, so its entries have no URL.

Configs load these weights by giving the URL itself::

    init_cfg=dict(type='Pretrained', checkpoint=checkpoint_url('vmamba_tiny_s1l8'))  # in Python
    init_cfg=dict(type='Pretrained', checkpoint='https://github.com/...pth')          # in configs

``BaseBackbone.load_official`` downloads a URL once through torch.hub (into
``$TORCH_HOME/hub/checkpoints/<file>``, default ``~/.cache/torch/hub/checkpoints``, see
:func:`cache_path`) and unpickles it, as local paths, with ``weights_only=True`` and mmvssm's
allow-list: offline, copy the file anywhere and pass its path (``--cfg-options
model.backbone.init_cfg.checkpoint=/path/file.pth``). ``tools/convert_checkpoint.py`` turns an
official file into a plain mmvssm backbone state dict.
"""
import os
from dataclasses import dataclass
from typing import Dict, List, Optional

GITHUB_VMAMBA = 'https://github.com/MzeroMiko/VMamba/releases/download/'
GITHUB_MAMBAOUT = 'https://github.com/yuweihao/MambaOut/releases/download/model/'


def hf_url(repo: str, filename: str) -> str:
    """Direct download link of a file of a Hugging Face model repository."""
    return f'https://huggingface.co/{repo}/resolve/main/{filename}'


@dataclass(frozen=True)
class ZooEntry:
    """One official classification checkpoint.

    Attributes:
        name: zoo name (``<family>_<size>``).
        family: backbone family: ``vim``, ``vssm``, ``mambaout``, ``arm``.
        arch: the backbone's ``arch`` preset the weights fit.
        top1: published ImageNet-1K top-1 (%), None when not published/verified.
        filename: file name of the release; None when unknown.
        url: download URL; None when unknown.
        hf_repo: Hugging Face repository id, when the file lives there.
        key: top-level key of the weights (None: a flat state dict).
        verified: the URL/file name is given by the official README / code or the HF file
            listing (per the research notes); False: taken from third-party scripts, or unknown.
            Nothing here was downloaded to check it.
        note: anything a user should know (EMA copy, pretraining vs fine-tuned, ...).
    """
    name: str
    family: str
    arch: str
    top1: Optional[float]
    filename: Optional[str]
    url: Optional[str]
    hf_repo: Optional[str] = None
    key: Optional[str] = 'model'
    verified: bool = True
    note: str = ''


def _vim(name, arch, repo, filename, top1, note='', verified=True):
    return ZooEntry(name, 'vim', arch, top1, filename, hf_url(repo, filename), hf_repo=repo,
                    key='model', verified=verified, note=note or
                    "also holds 'model_ema'; pickles argparse.Namespace (allow-listed)")


def _vmamba(name, arch, tag, filename, top1, note):
    return ZooEntry(name, 'vssm', arch, top1, filename, f'{GITHUB_VMAMBA}%23{tag}/{filename}',
                    key='model', note=note)


def _mambaout(size, top1):
    filename = f'mambaout_{size}.pth'
    return ZooEntry(f'mambaout_{size}', 'mambaout', size, top1, filename,
                    GITHUB_MAMBAOUT + filename, key=None,
                    note=f'flat state dict; timm hub copy: timm/mambaout_{size}.in1k')


_ARM_NOTE = ('file name not published in the README (HF repo OliverRen/ARM); download it and pass '
             'the local path')

#: All entries, in table order.
ZOO: Dict[str, ZooEntry] = {e.name: e for e in [
    _vim('vim_tiny', 'tiny', 'hustvl/Vim-tiny-midclstok', 'vim_t_midclstok_76p1acc.pth', 76.1),
    _vim('vim_tiny_s8', 'tiny_s8', 'hustvl/Vim-tiny-midclstok', 'vim_t_midclstok_ft_78p3acc.pth',
         78.3, note="stride-8 long-sequence fine-tune (pos_embed 27x27+1); also 'model_ema'"),
    _vim('vim_small', 'small', 'hustvl/Vim-small-midclstok', 'vim_s_midclstok_80p5acc.pth', 80.5),
    _vim('vim_small_s8', 'small_s8', 'hustvl/Vim-small-midclstok',
         'vim_s_midclstok_ft_81p6acc.pth', 81.6,
         note="stride-8 long-sequence fine-tune (pos_embed 27x27+1); also 'model_ema'"),
    _vim('vim_base', 'base', 'hustvl/Vim-base-midclstok', 'vim_b_midclstok_81p9acc.pth', 81.9,
         note='file name from third-party download scripts, not confirmed on the HF page',
         verified=False),
    _vmamba('vmamba_tiny_v0', 'tiny_v0', 'v0cls', 'vssmtiny_dp01_ckpt_epoch_292.pth', 82.2,
            'Vanilla-VMamba-T (v0)'),
    _vmamba('vmamba_small_v0', 'small_v0', 'v0cls', 'vssmsmall_dp03_ckpt_epoch_238.pth', 83.5,
            'Vanilla-VMamba-S (v0)'),
    _vmamba('vmamba_base_v0', 'base_v0', 'v0cls', 'vssmbase_dp06_ckpt_epoch_241.pth', 83.7,
            'Vanilla-VMamba-B (v0)'),
    _vmamba('vmamba_tiny_s2l5', 'tiny_s2l5', 'v2cls', 'vssm_tiny_0230_ckpt_epoch_262.pth', 82.5,
            'VMamba-T [s2l5]'),
    _vmamba('vmamba_small_s2l15', 'small', 'v2cls', 'vssm_small_0229_ckpt_epoch_222.pth', 83.6,
            "VMamba-S [s2l15], the paper's VMamba-S"),
    _vmamba('vmamba_base_s2l15', 'base', 'v2cls', 'vssm_base_0229_ckpt_epoch_237.pth', 83.9,
            "VMamba-B [s2l15], the paper's VMamba-B"),
    _vmamba('vmamba_tiny_s1l8', 'tiny', 'v2cls', 'vssm1_tiny_0230s_ckpt_epoch_264.pth', 82.6,
            "VMamba-T [s1l8], the paper's VMamba-T"),
    _vmamba('vmamba_small_s1l20', 'small_s1l20', 'v2cls', 'vssm1_small_0229s_ckpt_epoch_240.pth',
            83.3, 'VMamba-S [s1l20]'),
    _vmamba('vmamba_base_s1l20', 'base_s1l20', 'v2cls', 'vssm1_base_0229s_ckpt_epoch_225.pth',
            83.8, 'VMamba-B [s1l20]'),
    _mambaout('femto', 78.9),
    _mambaout('kobe', 80.0),
    _mambaout('tiny', 82.7),
    _mambaout('small', 84.1),
    _mambaout('base', 84.2),
    ZooEntry('arm_base', 'arm', 'base', 83.2, None, None, hf_repo='OliverRen/ARM', key='model',
             verified=False, note=_ARM_NOTE),
    ZooEntry('arm_large', 'arm', 'large', None, None, None, hf_repo='OliverRen/ARM', key='model',
             verified=False, note=_ARM_NOTE + '; top-1 not verified'),
    ZooEntry('arm_huge', 'arm', 'huge', 85.0, None, None, hf_repo='OliverRen/ARM', key='model',
             verified=False, note=_ARM_NOTE),
]}

FAMILIES = ('vim', 'vssm', 'mambaout', 'arm')


def get(name: str) -> ZooEntry:
    """The entry called ``name`` (KeyError listing the known names otherwise)."""
    if name not in ZOO:
        raise KeyError(f'unknown model-zoo name {name!r}; known: {sorted(ZOO)}')
    return ZOO[name]


def list_models(family: Optional[str] = None) -> List[str]:
    """Zoo names, optionally of one family."""
    return [n for n, e in ZOO.items() if family is None or e.family == family]


def checkpoint_url(name: str) -> str:
    """Download URL of ``name``; ValueError when the location is not known (ARM)."""
    entry = get(name)
    if entry.url is None:
        raise ValueError(f'{name}: {entry.note}. Pass a local path as the checkpoint instead.')
    return entry.url


def find_by_url(url: str) -> Optional[ZooEntry]:
    """The entry whose URL is ``url`` (or whose file name is the URL's / path's last part)."""
    for e in ZOO.values():
        if e.url == url:
            return e
    base = os.path.basename(url)
    return next((e for e in ZOO.values() if e.filename and e.filename == base), None)


def cache_path(name: str) -> str:
    """Where mmengine's / torch.hub's downloader keeps ``name`` once fetched."""
    entry = get(name)
    if entry.filename is None:
        raise ValueError(f'{name}: file name unknown ({entry.note})')
    hub = os.environ.get('TORCH_HOME') and os.path.join(os.environ['TORCH_HOME'], 'hub')
    hub = hub or os.path.join(os.path.expanduser(os.environ.get('XDG_CACHE_HOME', '~/.cache')),
                              'torch', 'hub')
    return os.path.join(hub, 'checkpoints', entry.filename)


_FAMILY_TITLES = {'vim': 'Vim (hustvl/Vim)', 'vssm': 'VMamba (MzeroMiko/VMamba)',
                  'mambaout': 'MambaOut (yuweihao/MambaOut)', 'arm': 'ARM (OliverRensu/ARM)'}
_CLASSES = {'vim': 'Vim', 'vssm': 'VSSM', 'mambaout': 'MambaOut', 'arm': 'ARM'}


def model_zoo_markdown() -> str:
    """``docs/model_zoo.md``, generated from :data:`ZOO` (a test keeps the file in sync)."""
    lines = [
        '# Model zoo: official ImageNet-1K checkpoints',
        '',
        '<!-- Generated by mmvssm.model_zoo.model_zoo_markdown(); edit mmvssm/model_zoo.py and run',
        '     python -c "from mmvssm.model_zoo import write_model_zoo_markdown as w; w()" -->',
        '',
        'Backbone weights for the configs, loaded with',
        "`init_cfg=dict(type='Pretrained', checkpoint=<URL or local path>)`. A URL is downloaded",
        'once, through torch.hub, into `$TORCH_HOME/hub/checkpoints/<file>` (default',
        '`~/.cache/torch/hub/checkpoints`) and, like a local file, unpickled with',
        "`weights_only=True` and mmvssm's allow-list; offline, pass a local path",
        '(`--cfg-options model.backbone.init_cfg.checkpoint=/path/file.pth`). Loading is strict:',
        'only the classifier head (and the det/seg output norms, which classification files do',
        'not have) may differ. `python tools/convert_checkpoint.py SRC DST --name <zoo name>`',
        'writes a plain mmvssm backbone state dict. In Python:',
        '`mmvssm.model_zoo.checkpoint_url(name)`.',
        '',
        '"key" is the top-level entry holding the weights (found automatically);',
        '"verified: yes": the location is given by the official README/code or the Hugging Face',
        'file listing; "no": taken from third-party scripts, or unknown.',
    ]
    for fam in FAMILIES:
        lines += ['', f'## {_FAMILY_TITLES[fam]}', '',
                  '| name | backbone | top-1 (%) | file | key | verified | notes |',
                  '|---|---|---|---|---|---|---|']
        for e in ZOO.values():
            if e.family != fam:
                continue
            top1 = f'{e.top1:.1f}' if e.top1 is not None else 'n/a'
            if e.url:
                file = f'[{e.filename}]({e.url})'
            elif e.hf_repo:
                file = f'unknown ([{e.hf_repo}](https://huggingface.co/{e.hf_repo}))'
            else:
                file = 'unknown'
            key = f'`{e.key}`' if e.key else 'flat'
            lines.append(f"| `{e.name}` | `{_CLASSES[fam]}(arch='{e.arch}')` | {top1} | {file} | "
                         f"{key} | {'yes' if e.verified else 'no'} | {e.note} |")
    return '\n'.join(lines) + '\n'


def write_model_zoo_markdown(path: Optional[str] = None) -> str:
    """Write :func:`model_zoo_markdown` to ``docs/model_zoo.md`` (or ``path``); returns the path."""
    if path is None:
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            'docs', 'model_zoo.md')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(model_zoo_markdown())
    return path
