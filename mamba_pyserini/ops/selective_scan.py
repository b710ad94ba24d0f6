"""Mamba-1's selective scan in PyTorch for CPUs (and GPUs without mamba_ssm).

transformers' reference scan indexes one time step at a time under autograd, which makes its backward pass
quadratic in the sequence length; stepping through ``unbind`` views and stacking the states once gives the same
values and gradients at a fraction of the cost. Same signature as transformers' ``mamba_selective_scan``."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def selective_scan(hidden_states, dt, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, **kwargs):
    """u, dt, z: (batch, d_inner, length); A: (d_inner, state); B, C: (batch, state, length)."""
    dtype = hidden_states.dtype
    if delta_bias is not None:
        dt = dt + delta_bias.to(dt.dtype)[..., None]
    if delta_softplus:
        dt = F.softplus(dt)
    dt = dt.float()
    decay = torch.exp(dt[..., None] * A.float()[None, :, None, :])  # (b, d, l, n)
    inputs = dt[..., None] * B.float().transpose(1, 2)[:, None] * hidden_states.float()[..., None]  # (b, d, l, n)
    state = torch.zeros_like(inputs[:, :, 0])
    states = []
    for a, x in zip(decay.unbind(2), inputs.unbind(2)):
        state = a * state + x
        states.append(state)
    out = torch.einsum("bdln,bnl->bdl", torch.stack(states, dim=2), C.float())
    if D is not None:
        out = out + hidden_states.float() * D.float()[None, :, None]
    if z is not None:
        out = out * F.silu(z.float())
    out = out.to(dtype)
    return (out, state) if return_last_state else out
