"""FLOP counting that includes the selective scan, for mmengine's ``FlopAnalyzer``.

mmengine (and fvcore) trace the model with ``torch.jit``; a ``torch.autograd.Function`` shows up
as one node ``prim::PythonOp.<ClassName>``, which the stock analyzer reports as *unsupported* and
counts as 0, so the scan of every vision-Mamba model goes missing (research T5). This module adds
handles for

- mmvssm's scan Functions (``mmvssm.ops.SCAN_FUNCTION_NAMES``) and the scan Functions of
  mamba-ssm / VMamba (``SelectiveScanFn``, ``SelectiveScanMamba``, ``SelectiveScanOflex``, ...):
  VMamba's accepted count (state-spaces/mamba#110)
  ``9·B·L·D·N``, + ``B·D·L`` when the ``D`` skip is given, + ``B·D·L`` when the ``z`` gate
  is fused,
  with ``D`` the total scanned channels (all directions of one call);
- mamba-ssm's fused ``MambaInnerFn`` (and Vim's ``MambaInnerFnNoOutProj``, ``BiMambaInnerFn``):
  the scan plus the conv1d / x_proj / dt_proj (/ out_proj) products hidden inside the Function;
- causal-conv1d's ``CausalConv1dFn``: a depthwise conv, ``B·D·L·W``.

Counts are multiply-accumulates, mmengine's/fvcore's "flop" (one fused multiply-add = 1), so the
totals compare with VMamba's "FLOPs" and MambaOut's "MACs". Like VMamba's counter, element-wise
activations and ``exp``/``neg``/``flip`` count 0 (they are unsupported in mmengine anyway; they
are registered as ignored here only to silence the warnings).

:func:`register_flop_handles` (run on ``import mmvssm``) inserts the handles into
``mmengine.analysis.complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS``, the dict every
``FlopAnalyzer`` copies in ``__init__``, so ``mmengine.analysis.get_model_complexity_info`` and the
stock mmdet / mmseg ``get_flops.py`` count the scan too. For an explicit analyzer use
``FlopAnalyzer(model, inputs).set_op_handle(**flop_handles())``.
"""
import inspect
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..ops import SCAN_FUNCTION_NAMES
from ..ops.scan_flops import flops_selective_scan_fn

#: Scan Functions of mamba-ssm and VMamba (``csms6s.py``), counted with the same formula.
EXTERNAL_SCAN_NAMES = ('SelectiveScanFn', 'SelectiveScanMamba', 'SelectiveScanOflex',
                       'SelectiveScanCore', 'SelectiveScan', 'SelectiveScanEasy')
#: mamba-ssm's fused in-projection-to-output Functions (Vim's fork adds the two variants).
INNER_FN_NAMES = ('MambaInnerFn', 'MambaInnerFnNoOutProj', 'BiMambaInnerFn')
#: Ops VMamba's counter registers as ignored (all 0 in mmengine already; silences warnings).
IGNORED_OPS = ('aten::silu', 'aten::silu_', 'aten::neg', 'aten::exp', 'aten::flip',
               'aten::gelu', 'aten::softplus')

#: Positional order of mamba-ssm's ``SelectiveScanFn.forward`` (after ``ctx``).
SCAN_ARG_ORDER = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias', 'delta_softplus',
                  'return_last_state')
#: Positional order of mamba-ssm's ``MambaInnerFn.forward`` (after ``ctx``).
INNER_ARG_ORDER = ('xz', 'conv1d_weight', 'conv1d_bias', 'x_proj_weight', 'delta_proj_weight',
                   'out_proj_weight', 'out_proj_bias', 'A', 'B', 'C', 'D', 'delta_bias',
                   'B_proj_bias', 'C_proj_bias', 'delta_softplus', 'checkpoint_lvl')


def scan_function_names() -> tuple:
    """All scan Function names that get the scan handle (mmvssm's and external ones)."""
    return SCAN_FUNCTION_NAMES + tuple(n for n in EXTERNAL_SCAN_NAMES if n not in SCAN_FUNCTION_NAMES)


# ----- reading a traced PythonOp ---------------------------------------------------------------
def _sizes(value) -> Optional[List[int]]:
    """Shape of a traced tensor ``Value`` (None for a non-tensor)."""
    try:
        return value.type().sizes()
    except (AttributeError, RuntimeError):
        return None


def _call_args(inputs: Sequence, outputs: Sequence, default_order: Sequence[str]) -> Dict[str, Any]:
    """The traced call's arguments by name: tensors as jit ``Value``s, others as Python objects.

    The node's calling convention (``cconv``: ``d`` tensor input, ``c`` constant) restores the
    positions of ``None``/scalar arguments, and the Function's ``forward`` signature names them
    (``default_order``, mamba-ssm's, when the class cannot be inspected).
    """
    node = outputs[0].node()
    try:
        cconv, scalars = node.cconv(), list(node.scalar_args())
        tensors = list(node.inputs())
        args, ti, si = [], 0, 0
        for c in cconv:
            if c == 'd':
                args.append(tensors[ti])
                ti += 1
            else:
                args.append(scalars[si])
                si += 1
    except (AttributeError, RuntimeError, IndexError):  # not a PythonOp node: tensors only
        args = list(inputs)
    names = list(default_order)
    try:
        fn_cls = node.pyobj().__self__
        params = list(inspect.signature(fn_cls.forward).parameters)[1:]  # drop ctx
        if 'A' in params:
            names = params
    except (AttributeError, RuntimeError, TypeError, ValueError):
        pass
    return dict(zip(names, args))


def _is_tensor(arg) -> bool:
    return arg is not None and _sizes(arg) is not None


def selective_scan_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """Handle for a scan Function ``(u, delta, A, B, C, D=None, z=None, ...)``.

    ``u``: ``(B, D, L)``; ``A``: ``(D, N)``. Counts the ``D`` and ``z`` terms only when those
    arguments are tensors in the traced call.
    """
    args = _call_args(inputs, outputs, SCAN_ARG_ORDER)
    b, d, length = _sizes(args['u'])
    n = _sizes(args['A'])[-1]
    return flops_selective_scan_fn(b, length, d, n, with_D=_is_tensor(args.get('D')),
                                   with_Z=_is_tensor(args.get('z')))


def mamba_inner_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """Handle for mamba-ssm's ``MambaInnerFn`` (+ Vim's ``MambaInnerFnNoOutProj`` /
    ``BiMambaInnerFn``): causal conv1d, ``x_proj``, ``dt_proj``, the gated scan with ``D`` (one
    per ``A``/``A_b``), and ``out_proj`` when present."""
    args = _call_args(inputs, outputs, INNER_ARG_ORDER)
    b, two_di, length = _sizes(args['xz'])
    di = two_di // 2
    n = _sizes(args['A'])[-1]
    scans = 1 + int(_is_tensor(args.get('A_b')))
    width = _sizes(args['conv1d_weight'])[-1]
    x_proj_out = _sizes(args['x_proj_weight'])[0]       # R + 2N
    rank = _sizes(args['delta_proj_weight'])[-1]        # R
    per_scan = (b * di * length * width + b * length * di * x_proj_out
                + b * length * di * rank
                + flops_selective_scan_fn(b, length, di, n, with_D=_is_tensor(args.get('D')),
                                          with_Z=True))
    total = scans * per_scan
    if _is_tensor(args.get('out_proj_weight')):
        total += b * length * di * _sizes(args['out_proj_weight'])[0]
    return total


def causal_conv1d_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """Handle for causal-conv1d's ``CausalConv1dFn(x (B, D, L), weight (D, W), ...)``."""
    b, d, length = _sizes(inputs[0])
    return b * d * length * _sizes(inputs[1])[-1]


def flop_handles() -> Dict[str, Optional[Callable]]:
    """``{op name: handle}`` for ``FlopAnalyzer.set_op_handle`` (``None`` = ignored op)."""
    handles: Dict[str, Optional[Callable]] = {
        f'prim::PythonOp.{n}': selective_scan_flop_jit for n in scan_function_names()}
    handles.update({f'prim::PythonOp.{n}': mamba_inner_flop_jit for n in INNER_FN_NAMES})
    handles['prim::PythonOp.CausalConv1dFn'] = causal_conv1d_flop_jit
    handles.update({op: None for op in IGNORED_OPS})
    return handles


def register_flop_handles() -> bool:
    """Add :func:`flop_handles` to mmengine's default FLOP handles (private dict, guarded).

    Returns False (and changes nothing) when mmengine's layout differs from 0.10.x.
    """
    try:
        from mmengine.analysis import complexity_analysis
        table = complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS
    except (ImportError, AttributeError):
        return False
    if not isinstance(table, dict):
        return False
    for name, handle in flop_handles().items():
        table.setdefault(name, handle)
    return True


def count_flops(model, inputs) -> int:
    """Total FLOPs (MACs) of ``model(*inputs)`` with the scan handles; one trace, no activations."""
    from mmengine.analysis import FlopAnalyzer
    analyzer = FlopAnalyzer(model, inputs).set_op_handle(**flop_handles())
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    return analyzer.total()


register_flop_handles()
