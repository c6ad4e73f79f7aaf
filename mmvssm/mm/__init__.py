"""OpenMMLab glue: registration, checkpoint compatibility, optimizer constructors, FLOPs.

Imported by ``import mmvssm`` when mmengine is installed; never imports mmdet or mmseg.
"""
from mmengine.runner.checkpoint import CheckpointLoader

from ..utils.checkpoint import load_url_weights_only
from ..utils.safe_load import allow_official_checkpoint_globals

allow_official_checkpoint_globals()


def load_from_http_weights_only(filename, map_location=None):
    """mmengine's http(s) checkpoint loader, but unpickling with ``weights_only=True`` (mmengine's
    own passes False), so the allow-list also holds for ``load_from`` / ``--resume`` URLs."""
    return load_url_weights_only(filename, map_location=map_location)


CheckpointLoader.register_scheme(('http://', 'https://'), load_from_http_weights_only, force=True)
from . import flops, layer_decay, registry  # noqa: F401,E402  (FLOP handles, optimizer constructor)
from . import atomic_checkpoint  # noqa: F401,E402  (AtomicCheckpointHook, 'atomic_local' backend)
from . import hooks  # noqa: F401,E402  (EvalProgressBarHook: val / test progress bar)
