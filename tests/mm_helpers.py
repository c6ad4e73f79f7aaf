"""Build mmdet / mmseg models from configs and run a train step and an inference pass on CPU.

Shared by the foundation, config and end-to-end tests.
"""
import torch


def load_config(path_or_text, tmp_path=None):
    """mmengine Config from a file path, or from config text written to ``tmp_path``."""
    from mmengine.config import Config
    if tmp_path is not None:
        f = tmp_path / 'cfg.py'
        f.write_text(path_or_text)
        path_or_text = str(f)
    return Config.fromfile(path_or_text)


def build_model(cfg):
    """Build ``cfg.model`` in the config's default scope (mmdet or mmseg)."""
    from mmengine.registry import init_default_scope
    scope = cfg.get('default_scope', 'mmdet')
    init_default_scope(scope)
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    return MODELS.build(cfg.model)


def det_batch(h, w, num_classes=80, batch_size=1, seed=0):
    """A Mask R-CNN input batch (uint8 images + boxes + masks) in mmdet's data format."""
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(seed)
    return demo_mm_inputs(batch_size=batch_size, image_shapes=[(3, h, w)] * batch_size,
                          num_items=[3] * batch_size, num_classes=num_classes, with_mask=True)


def seg_batch(h, w, num_classes=150, batch_size=1, seed=0):
    """An UperNet input batch (uint8 images + semantic maps) in mmseg's data format."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(batch_size):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, h, w), generator=g))
        s.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        samples.append(s)
    return {'inputs': inputs, 'data_samples': samples}


def train_and_predict(model, data):
    """One loss forward + backward and one predict pass; returns (total loss, predictions)."""
    model.train()
    batch = model.data_preprocessor(data, True)
    losses = model(**batch, mode='loss')
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(x.sum() for x in v)
                for k, v in losses.items() if 'loss' in k)
    total.backward()
    assert torch.isfinite(total), losses
    model.eval()
    with torch.no_grad():
        preds = model(**model.data_preprocessor(data, False), mode='predict')
    return total.item(), preds
