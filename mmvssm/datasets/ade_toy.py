"""``ToyADE20KDataset``: mmseg's ``ADE20KDataset`` with the toy classes.

Imports mmseg; load it from a config with
``custom_imports=dict(imports=['mmvssm.datasets.ade_toy'], allow_failed_imports=False)``.

Why a subclass: overriding ``metainfo=dict(classes=..., palette=...)`` on
``ADE20KDataset`` does not work for our data. mmseg's
``BaseSegDataset.get_label_map`` treats new classes as a *subset* of the 150
ADE20K classes (a ``ValueError`` for names outside it) and builds a
``label_map`` from the ADE20K indices to the new ones, which
``LoadAnnotations`` then applies to the label PNG: with our names ('sky' is
ADE index 2, 'grass' 9, ...) it would remap the toy labels 0..4 to ignore /
wrong classes. With the classes in the subclass's ``METAINFO`` no label map is
built and the PNG values (after ``reduce_zero_label``) are the class indices.
"""
from mmseg.datasets import ADE20KDataset
from mmseg.registry import DATASETS

from .toy import ADE_TOY_CLASSES, ADE_TOY_PALETTE


@DATASETS.register_module()
class ToyADE20KDataset(ADE20KDataset):
    """ADE20K-format toy dataset written by ``tools/make_toy_data.py``.

    Label PNG values: 0 = other (ignored: 255 after ``reduce_zero_label``),
    1..5 = ``ADE_TOY_CLASSES`` (0..4 after reduction). Same file layout and
    suffixes ('.jpg' images, '.png' labels) as ADE20K.
    """

    METAINFO = dict(classes=ADE_TOY_CLASSES, palette=ADE_TOY_PALETTE)


__all__ = ['ToyADE20KDataset']
