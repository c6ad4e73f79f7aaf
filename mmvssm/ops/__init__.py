"""Selective-scan op (backends ``cuda`` / ``cpu`` / ``torch`` / ``ref``) and 2-D scan orders."""
from ._common import is_compiling, traceable_only
from .scan_cpu import SelectiveScanCpu
from .scan_cuda import SelectiveScanCuda
from .scan_orders import (ARM_ORDERS, CROSS_SCAN_ORDERS, ORDERS, VIM_ORDERS, cross_merge, cross_scan,
                          flatten_rows, from_sequence, scan_flatten, scan_merge, scan_unflatten, to_sequence,
                          unflatten_rows)
from .scan_ref import SelectiveScanRef, selective_scan_ref_math
from .scan_torch import SelectiveScanTorch
from .selective_scan import (BACKENDS, ENV_VAR, SCAN_FUNCTION_NAMES, BackendUnavailableError, available_backends,
                             get_scan_function, resolve_backend, selective_scan)

__all__ = [
    'selective_scan', 'available_backends', 'resolve_backend', 'get_scan_function', 'BackendUnavailableError',
    'BACKENDS', 'ENV_VAR', 'SCAN_FUNCTION_NAMES', 'is_compiling', 'traceable_only',
    'SelectiveScanRef', 'SelectiveScanTorch', 'SelectiveScanCpu', 'SelectiveScanCuda', 'selective_scan_ref_math',
    'ORDERS', 'VIM_ORDERS', 'CROSS_SCAN_ORDERS', 'ARM_ORDERS', 'flatten_rows', 'unflatten_rows', 'to_sequence',
    'from_sequence', 'scan_flatten', 'scan_unflatten', 'scan_merge', 'cross_scan', 'cross_merge',
]
