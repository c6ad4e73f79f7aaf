"""Every config in configs/det and configs/seg: loads, carries the published recipe, has no stale
keys, builds (without downloading weights) and runs a training step and an inference pass on CPU.

The build-and-run test keeps every channel width, neck and head of the config but cuts the
backbone to 1 block per stage (VSSM, MambaOut) or 4 blocks (Vim, ARM): the full models take
10-70 s each on 2 shared CPU cores (VSSM-T Mask R-CNN: about 70 s), and depth changes nothing in
the config's wiring (the backbones' own tests cover depth). Inputs are small and not multiples of
the stride (det 120x152, seg 2 x 96x120), so the backbones' internal padding and the online
position-embedding resize are exercised; the seg data preprocessor's training pad size is reduced
from 512x512 to the input size.
"""
import copy
import glob
import inspect
import os
import os.path as osp
import time

import pytest
import torch

from mm_helpers import build_model, det_batch, load_config, seg_batch, train_and_predict

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_DIR = osp.join(ROOT, 'configs')


def _configs(task):
    """The model configs of ``configs/<task>`` (``_*.py`` files are pieces others inherit)."""
    return sorted(osp.relpath(p, CONFIG_DIR)
                  for p in glob.glob(osp.join(CONFIG_DIR, task, '*.py'))
                  if not osp.basename(p).startswith('_'))


DET = _configs('det')
SEG = _configs('seg')
ALL = DET + SEG
FAMILIES = {'vim': 'Vim', 'vssm': 'VSSM', 'mambaout': 'MambaOut', 'arm': 'ARM'}

# The published recipe of each config (research/anchors.md): optimizer lr / weight decay,
# layer-wise lr decay (None: none), drop path, images per GPU (x 8 GPUs = 16), epochs or
# iterations, the backbone arch, and (plain backbones in seg) the blocks whose maps are used.
_DET_1X = dict(lr=1e-4, wd=0.05, ld=None, batch=2, epochs=12)
_SEG_VSSM = dict(lr=6e-5, wd=0.01, ld=None, batch=2, iters=160000)
RECIPES = {
    'det/mask_rcnn_vssm_t_fpn_1x_coco.py': dict(_DET_1X, dp=0.2, arch='tiny'),
    'det/mask_rcnn_vssm_s_fpn_1x_coco.py': dict(_DET_1X, dp=0.3, arch='small'),
    'det/mask_rcnn_vssm_b_fpn_1x_coco.py': dict(_DET_1X, dp=0.6, arch='base'),
    'det/mask_rcnn_vssm_t_fpn_ms_3x_coco.py': dict(_DET_1X, dp=0.2, arch='tiny', epochs=36),
    'det/mask_rcnn_vssm_s_fpn_ms_3x_coco.py': dict(_DET_1X, dp=0.3, arch='small', epochs=36),
    'det/mask_rcnn_mambaout_t_fpn_1x_coco.py': dict(_DET_1X, dp=0.3, arch='tiny'),
    'det/mask_rcnn_mambaout_s_fpn_1x_coco.py': dict(_DET_1X, dp=0.4, arch='small'),
    'det/mask_rcnn_mambaout_b_fpn_1x_coco.py': dict(_DET_1X, dp=0.6, arch='base'),
    'det/mask_rcnn_vim_t_fpn_1x_coco.py': dict(_DET_1X, wd=0.1, ld=0.837, dp=0.1, arch='tiny'),
    'det/mask_rcnn_vim_s_fpn_1x_coco.py': dict(_DET_1X, wd=0.1, ld=0.837, dp=0.1, arch='small'),
    'det/mask_rcnn_arm_b_fpn_1x_coco.py': dict(_DET_1X, wd=0.1, ld=0.7, dp=0.1, arch='base'),
    'seg/upernet_vssm_t_ade20k.py': dict(_SEG_VSSM, dp=0.2, arch='tiny'),
    'seg/upernet_vssm_s_ade20k.py': dict(_SEG_VSSM, dp=0.3, arch='small'),
    'seg/upernet_vssm_b_ade20k.py': dict(_SEG_VSSM, dp=0.6, arch='base'),
    'seg/upernet_mambaout_t_ade20k.py': dict(_SEG_VSSM, lr=1e-4, dp=0.3, arch='tiny'),
    'seg/upernet_mambaout_s_ade20k.py': dict(_SEG_VSSM, lr=1e-4, dp=0.4, arch='small'),
    'seg/upernet_mambaout_b_ade20k.py': dict(_SEG_VSSM, lr=1e-4, dp=0.6, arch='base'),
    'seg/upernet_vim_t_ade20k.py': dict(_SEG_VSSM, ld=0.92, dp=0.1, arch='tiny',
                                        out=(5, 11, 17, 23)),
    'seg/upernet_vim_s_ade20k.py': dict(_SEG_VSSM, ld=0.95, dp=0.1, arch='small',
                                        out=(5, 11, 17, 23)),
    # mmseg's MAE / BEiT UperNet configs for ViT-B
    'seg/upernet_arm_b_ade20k.py': dict(_SEG_VSSM, lr=1e-4, wd=0.05, ld=0.65, dp=0.1,
                                        arch='base', out=(3, 5, 7, 11)),
}


def _family(rel):
    name = osp.basename(rel)
    for fam in FAMILIES:
        if f'_{fam}_' in name:
            return fam
    raise AssertionError(f'{rel}: no family in the file name')


_CACHE = {}


def _load(rel):
    """A fresh copy of the config (loading one takes seconds: each reads 4-6 base files)."""
    if rel not in _CACHE:
        _CACHE[rel] = load_config(osp.join(CONFIG_DIR, rel))
    return copy.deepcopy(_CACHE[rel])


def test_expected_configs_exist():
    for rel in RECIPES:
        assert rel in ALL, f'missing config {rel}'
    for rel in ALL:
        assert rel in RECIPES, f'{rel}: add its published recipe to RECIPES'
    names = [osp.basename(p) for p in ALL]
    for n in names:
        fam = _family(n)
        assert n.startswith(('mask_rcnn_', 'upernet_')) and fam in FAMILIES


@pytest.mark.parametrize('rel', ALL)
def test_config_loads_with_recipe_and_no_stale_keys(rel):
    from mmengine.registry import MODELS
    cfg = _load(rel)
    task = rel.split('/')[0]
    assert cfg.default_scope == ('mmdet' if task == 'det' else 'mmseg')
    assert cfg.custom_imports == dict(imports=['mmvssm'], allow_failed_imports=False)

    # backbone: ours, every key a constructor argument (no ResNet / Swin leftovers)
    bb = cfg.model.backbone
    cls = MODELS.get(bb.type)
    assert bb.type == FAMILIES[_family(rel)] and cls is not None
    params = inspect.signature(cls.__init__).parameters
    stale = sorted(set(bb) - set(params) - {'type'})
    assert not stale, f'{rel}: backbone keys {stale} are not {bb.type} arguments'
    assert bb.init_cfg.type == 'Pretrained' and bb.init_cfg.checkpoint
    # the official ImageNet weights of this arch, as listed in the model zoo
    from mmvssm import model_zoo
    entry = model_zoo.find_by_url(bb.init_cfg.checkpoint)
    if bb.type == 'ARM':  # no published file URL: a local path the user fills in
        assert entry is None and '://' not in bb.init_cfg.checkpoint
    else:
        assert entry is not None, f'{rel}: {bb.init_cfg.checkpoint} is not in the model zoo'
        assert (entry.family, entry.arch) == (_family(rel), bb.arch)
    neck = cfg.model.get('neck')
    if isinstance(neck, dict) and MODELS.get(neck.type) is not None and \
            neck.type in ('SimpleFeaturePyramid', 'DeconvPyramid'):
        nparams = inspect.signature(MODELS.get(neck.type).__init__).parameters
        assert not sorted(set(neck) - set(nparams) - {'type'})

    # the published recipe
    r = RECIPES[rel]
    opt = cfg.optim_wrapper.optimizer
    assert opt.type == 'AdamW' and opt.lr == r['lr'] and opt.weight_decay == r['wd']
    assert bb.arch == r['arch'] and bb.drop_path_rate == r['dp']
    pw = cfg.optim_wrapper.get('paramwise_cfg', {})
    if r['ld'] is None:
        assert 'constructor' not in cfg.optim_wrapper and 'layer_decay_rate' not in pw
    else:
        assert cfg.optim_wrapper.constructor == 'MambaLayerDecayOptimWrapperConstructor'
        assert pw == dict(layer_decay_rate=r['ld'])
    if 'out' in r:
        assert tuple(bb.out_indices) == r['out']
    assert cfg.train_dataloader.batch_size == r['batch']
    # --auto-scale-lr works with every config: the published total batch is 8 GPUs x batch
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=8 * r['batch'])
    assert cfg.optim_wrapper.type == 'OptimWrapper'  # fp32; --amp switches on GPUs
    if task == 'det':
        assert cfg.train_cfg.max_epochs == r['epochs']
        assert cfg.param_scheduler[-1].end == r['epochs']
    else:
        assert cfg.train_cfg.max_iters == r['iters']
        assert cfg.param_scheduler[-1].end == r['iters']
        assert cfg.model.test_cfg.mode == 'whole'

    # a test pipeline that accepts any image size: keep-ratio resize, no crop
    test_pipe = cfg.test_dataloader.dataset.pipeline
    types = [t.type for t in test_pipe]
    assert not any('Crop' in t for t in types), types
    resize = [t for t in test_pipe if t.type == 'Resize']
    assert len(resize) == 1 and resize[0].keep_ratio

    # runtime: atomic checkpoints with the toolbox's interval, and the val / test progress bar
    from mmengine.registry import HOOKS
    from mmvssm.mm.atomic_checkpoint import AtomicCheckpointHook
    from mmvssm.mm.hooks import EvalProgressBarHook
    ckpt = cfg.default_hooks.checkpoint
    assert {k: v for k, v in ckpt.items() if k != '_scope_'} == (dict(type='AtomicCheckpointHook', interval=1) if task == 'det' else
                    dict(type='AtomicCheckpointHook', by_epoch=False, interval=16000))
    assert isinstance(HOOKS.build(copy.deepcopy(ckpt)), AtomicCheckpointHook)
    assert [h.type for h in cfg.custom_hooks] == ['EvalProgressBarHook']
    assert isinstance(HOOKS.build(copy.deepcopy(cfg.custom_hooks[0])), EvalProgressBarHook)


def _strip_pretrained(cfg):
    cfg.model.backbone.init_cfg = None


def _reduce_depth(cfg):
    """Fewest blocks that keep the config's structure (see module docstring)."""
    bb = cfg.model.backbone
    if bb.type in ('VSSM', 'MambaOut'):
        bb.depths = [1, 1, 1, 1]
    else:  # plain: 4 blocks, the same number of output blocks, ending with the last
        bb.depth = 4
        bb.out_indices = tuple(range(4))[-len(bb.out_indices):]


@pytest.mark.parametrize('rel', ALL)
def test_config_builds_and_runs(rel):
    cfg = _load(rel)
    _strip_pretrained(cfg)
    _reduce_depth(cfg)
    task = rel.split('/')[0]
    t0, c0 = time.perf_counter(), time.process_time()
    torch.manual_seed(0)
    if task == 'seg':
        h, w = 96, 120
        cfg.model.data_preprocessor.size = (h, w)
        model = build_model(cfg)
        data = seg_batch(h, w, batch_size=2)
    else:
        # fewer proposals / sampled RoIs: the box head's cost on CPU, not part of the wiring
        cfg.model.train_cfg.rpn_proposal.max_per_img = 100
        cfg.model.train_cfg.rcnn.sampler.num = 64
        cfg.model.test_cfg.rpn.max_per_img = 100
        model = build_model(cfg)
        data = det_batch(120, 152)
    loss, preds = train_and_predict(model, data)
    assert loss > 0
    if task == 'seg':
        assert len(preds) == 2 and preds[0].pred_sem_seg.data.shape[-2:] == (h, w)
    else:
        assert len(preds) == 1 and hasattr(preds[0], 'pred_instances')
        if len(preds[0].pred_instances):
            assert preds[0].pred_instances.masks.shape[-2:] == (120, 152)
    print(f'{rel}: {time.perf_counter() - t0:.1f} s wall, {time.process_time() - c0:.1f} s CPU')


@pytest.mark.parametrize('rel', ['det/mask_rcnn_vim_t_fpn_1x_coco.py',
                                 'seg/upernet_vim_t_ade20k.py'])
def test_layer_decay_optimizer_from_config(rel):
    """The layer-decay configs build their optimizer: blocks get decayed lrs, heads full lr."""
    from mmengine.optim import build_optim_wrapper
    cfg = _load(rel)
    _strip_pretrained(cfg)
    _reduce_depth(cfg)
    model = build_model(cfg)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    scales = {g['group_name']: g['lr_scale'] for g in wrapper.optimizer.param_groups}
    rate = cfg.optim_wrapper.paramwise_cfg.layer_decay_rate
    n = model.backbone.num_layers
    assert scales[f'layer_{n + 1}_decay'] == 1.0  # neck and heads
    assert scales['layer_1_decay'] == pytest.approx(rate ** n)
    assert scales['layer_0_no_decay'] == pytest.approx(rate ** (n + 1))  # pos_embed, cls_token


def test_seg_demos_share_the_toy_data():
    """Both segmentation demos take their data from configs/seg/demo/_toy_ade_data.py."""
    vim, mo = (_load(f'seg/demo/upernet_{f}_t_toy_ade.py') for f in ('vim', 'mambaout'))
    for key in ('data_root', 'img_scale', 'num_classes', 'crop_size', 'train_pipeline',
                'test_pipeline', 'train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert vim[key] == mo[key], key
    assert vim.data_root == 'data/toy/ade/ADEChallengeData2016' and vim.num_classes == 5
    ds = vim.train_dataloader.dataset
    assert ds.type == 'ToyADE20KDataset' and ds.data_root == vim.data_root
    assert ds.pipeline == vim.train_pipeline and vim.test_dataloader == vim.val_dataloader
    assert vim.model.decode_head.num_classes == mo.model.decode_head.num_classes == 5
    assert vim.model.data_preprocessor.size == mo.model.data_preprocessor.size == (160, 160)


def test_list_neck_builds_a_sequential():
    """mmengine's model builder turns a list of neck dicts into a ``Sequential`` (how an adapter
    can be chained before an mmdet FPN); our plain-backbone configs use the adapter alone."""
    from mmengine.model import Sequential
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    import mmvssm  # noqa: F401
    from mmdet.registry import MODELS
    neck = MODELS.build([
        dict(type='DeconvPyramid', in_channels=8, norm_cfg=dict(type='BN')),
        dict(type='FPN', in_channels=[8] * 4, out_channels=16, num_outs=5)])
    assert isinstance(neck, Sequential)
    outs = neck((torch.randn(1, 8, 5, 7), ) * 4)
    assert [tuple(o.shape[-2:]) for o in outs] == [(20, 28), (10, 14), (5, 7), (3, 4), (2, 2)]


def test_vim_t_upernet_matches_the_official_parameter_count():
    """Vim-T UperNet is the official model module for module (hustvl/Vim's
    ``seg/tools/analysis_tools/vim-t-upernet.txt``: 12,901,100 parameters). The only difference is the
    position embedding: the official count is of a model built for 1024x1024 inputs, with a fixed
    (1, 64*64, 192) table and no cls token, where mmvssm keeps the checkpoint's (1, 197, 192) grid (with
    its middle cls token) and resizes it online."""
    cfg = _load('seg/upernet_vim_t_ade20k.py')
    _strip_pretrained(cfg)
    model = build_model(cfg)
    bb = model.backbone
    total = sum(p.numel() for p in model.parameters())
    assert tuple(bb.pos_embed.shape) == (1, 197, 192) and tuple(bb.cls_token.shape) == (1, 1, 192)
    assert total - bb.pos_embed.numel() - bb.cls_token.numel() + 64 * 64 * 192 == 12_901_100
