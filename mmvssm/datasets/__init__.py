"""Dataset helpers for mmvssm.

* :mod:`mmvssm.datasets.toy` -- deterministic generation of tiny COCO-format
  (instance) and ADE20K-format (semantic) datasets for smoke tests and demo
  configs (plain numpy / OpenCV / pycocotools; no mmdet / mmseg import).
  Command line: ``python tools/make_toy_data.py --out data/toy``.
* :mod:`mmvssm.datasets.ade_toy` -- ``ToyADE20KDataset``, an mmseg
  ``ADE20KDataset`` subclass carrying the toy classes / palette. It imports
  mmseg and is only loaded by configs through
  ``custom_imports=dict(imports=['mmvssm.datasets.ade_toy'])``.

This package deliberately imports nothing, so ``import mmvssm`` never pulls in
mmdet or mmseg.
"""
