"""OpenMMLab glue: registration, checkpoint compatibility, optimizer constructors, FLOPs.

Imported by ``import mmvssm`` when mmengine is installed; never imports mmdet or mmseg.
"""
from ..utils.safe_load import allow_official_checkpoint_globals

allow_official_checkpoint_globals()
from . import flops, layer_decay, registry  # noqa: F401,E402  (FLOP handles, optimizer constructor)
from . import atomic_checkpoint  # noqa: F401,E402  (AtomicCheckpointHook, 'atomic_local' backend)
from . import hooks  # noqa: F401,E402  (EvalProgressBarHook: val / test progress bar)
