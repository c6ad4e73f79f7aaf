"""``ref`` backend: the plain sequential selective scan (shape of mamba-ssm's ``selective_scan_ref``).

It materializes ``exp(delta * A)`` and ``delta * B * u`` as (B, D, L, N) tensors and loops over L in
Python, exactly like mamba-ssm's reference. Slow and memory hungry: for tests and as the benchmark
baseline only. Computes in fp32 (fp64 for fp64 inputs, so it can serve as ground truth).
"""
import torch
import torch.nn.functional as F

from ._common import no_autocast


def selective_scan_ref_math(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Differentiable reference math. All tensors already in the compute dtype.

    u, delta, z: (B, D, L); A: (D, N); B, C: (B, N, L) or (B, G, N, L); D, delta_bias: (D,).
    Returns ``(out, last_state)``: out (B, D, L) in the compute dtype, last_state (B, D, N).
    """
    if delta_bias is not None:
        delta = delta + delta_bias[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, seqlen = u.shape
    delta_a = torch.exp(torch.einsum('bdl,dn->bdln', delta, A))
    grouped = B.dim() == 4
    if grouped:
        B = B.repeat_interleave(dim // B.shape[1], dim=1)  # (B, D, N, L)
        delta_b_u = torch.einsum('bdl,bdnl,bdl->bdln', delta, B, u)
    else:
        delta_b_u = torch.einsum('bdl,bnl,bdl->bdln', delta, B, u)
    if C.dim() == 4:
        C = C.repeat_interleave(dim // C.shape[1], dim=1)
    x = u.new_zeros((batch, dim, A.shape[1]))
    # unbind (not indexing) so that autograd stacks the per-step gradients once instead of
    # scattering every step into a full-size zero tensor (quadratic in L)
    a_steps, b_steps, c_steps = delta_a.unbind(2), delta_b_u.unbind(2), C.unbind(-1)
    ys = []
    for i in range(seqlen):
        x = a_steps[i] * x + b_steps[i]
        if C.dim() == 4:
            ys.append(torch.einsum('bdn,bdn->bd', x, c_steps[i]))
        else:
            ys.append(torch.einsum('bdn,bn->bd', x, c_steps[i]))
    y = torch.stack(ys, dim=2)
    out = y if D is None else y + u * D[:, None]
    if z is not None:
        out = out * F.silu(z)
    return out, x


class SelectiveScanRef(torch.autograd.Function):
    """Sequential reference scan; backward recomputes the reference graph and differentiates it."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        cdt = torch.float64 if u.dtype == torch.float64 else torch.float32
        args = [t if t is None else t.to(cdt) for t in (u, delta, A, B, C, D, z, delta_bias)]
        with torch.no_grad(), no_autocast(u.device.type):
            out, last = selective_scan_ref_math(*args, delta_softplus=delta_softplus)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        ctx.delta_softplus = delta_softplus
        ctx.mark_non_differentiable(last)
        return out.to(u.dtype), last

    @staticmethod
    def backward(ctx, dout, dlast):
        # torch.func.vjp, not enable_grad + autograd.grad: it also differentiates inside a custom op's
        # kernel (scan_custom_op), where ATen's autograd keys are excluded
        saved = ctx.saved_tensors
        cdt = torch.float64 if saved[0].dtype == torch.float64 else torch.float32
        args = [None if t is None else t.detach().to(cdt) for t in saved]
        present = [i for i, t in enumerate(args) if t is not None]

        def out_of(*tensors):
            full = list(args)
            for i, t in zip(present, tensors):
                full[i] = t
            return selective_scan_ref_math(*full, delta_softplus=ctx.delta_softplus)[0]

        with no_autocast(saved[0].device.type):
            _, vjp = torch.func.vjp(out_of, *(args[i] for i in present))
            grads = dict(zip(present, vjp(dout.to(cdt))))
        result = [None if i not in grads else grads[i].to(t.dtype) for i, t in enumerate(saved)]
        return (*result, None, None)
