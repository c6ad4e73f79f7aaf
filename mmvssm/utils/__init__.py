"""Framework-free helpers (checkpoint reading and strict loading)."""
from .checkpoint import (CheckpointMismatchError, extract_state_dict, load_checkpoint_file,
                         load_state_dict_strict, strip_prefixes)

__all__ = ['CheckpointMismatchError', 'extract_state_dict', 'load_checkpoint_file',
           'load_state_dict_strict', 'strip_prefixes']
