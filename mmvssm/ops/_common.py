"""Small helpers shared by the selective-scan backends."""
import contextlib

import torch


def compute_dtype(dtype):
    """fp64 inputs compute in fp64 (gradcheck); everything else in fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@contextlib.contextmanager
def no_autocast(device_type):
    """Disable autocast for ``device_type`` ('cpu' / 'cuda') inside the block; the scan runs in fp32."""
    if device_type in ('cpu', 'cuda'):
        with torch.autocast(device_type=device_type, enabled=False):
            yield
    else:
        yield


def as_4d(t):
    """(B, N, L) -> (B, 1, N, L) view; (B, G, N, L) unchanged."""
    return t.unsqueeze(1) if t.dim() == 3 else t
