"""FLOP count of one selective scan, and its formulas for ``torch.utils.flop_counter``.

The count is VMamba's / state-spaces/mamba#110's, in multiply-accumulates (mmengine's and
fvcore's "flop"): ``9·B·L·D·N``, + ``B·D·L`` for the ``D`` skip, + ``B·D·L`` for the ``z`` gate
(``mmvssm.mm.flops`` uses it for jit-traced counting). ``torch.utils.flop_counter`` counts FLOPs
as two per multiply-add (``mm``: ``2·m·n·k``), so its formulas here are twice that for the
forward op and, by the convention torch's own formulas follow for ``mm`` and convolutions
(gradient of the input + gradient of the weights), four times it for the backward op.
"""


def flops_selective_scan_fn(B: int, L: int, D: int, N: int, with_D: bool = True,
                            with_Z: bool = False) -> int:
    """Multiply-accumulates of one selective scan of ``D`` channels (all groups), ``L`` steps, batch ``B``."""
    flops = 9 * B * L * D * N
    if with_D:
        flops += B * D * L
    if with_Z:
        flops += B * D * L
    return flops


def _macs(u_shape, A_shape, D_shape, z_shape) -> int:
    batch, dim, length = u_shape
    return flops_selective_scan_fn(batch, length, dim, A_shape[1], D_shape is not None, z_shape is not None)


def register_torch_flop_formulas(forward_op, backward_op) -> None:
    """Count ``forward_op`` (``mmvssm::selective_scan``) and ``backward_op`` in ``FlopCounterMode``."""
    from torch.utils.flop_counter import register_flop_formula

    @register_flop_formula(forward_op)
    def _forward_flops(u, delta, A, B, C, D, z, *args, out_shape=None, **kwargs) -> int:
        return 2 * _macs(u, A, D, z)

    @register_flop_formula(backward_op)
    def _backward_flops(dout, u, delta, A, B, C, D, z, *args, out_shape=None, **kwargs) -> int:
        return 4 * _macs(u, A, D, z)
