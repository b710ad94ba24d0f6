"""Mamba-2's chunked scan (state-space duality) in PyTorch, for CPUs and GPUs without mamba_ssm.

Within a chunk the scan is a masked, decayed "attention" computed with batched matmuls; between chunks a short loop
carries the state (a sequence of 512 tokens in chunks of 32 takes 16 steps). transformers' reference broadcasts
multiplies over permuted 5-d tensors instead, which on an H100 is several times slower and on CPUs slower still.
Same signature as transformers' ``mamba2_chunk_scan`` (``mamba_chunk_scan_combined``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def chunk_scan(hidden_states, dt, A, B, C, chunk_size, D=None, dt_bias=None, initial_states=None, dt_softplus=False,
               dt_limit=(0.0, float("inf")), return_final_states=False, **kwargs):
    """hidden_states: (b, l, h, p); dt: (b, l, h); A, D, dt_bias: (h,); B, C: (b, l, g, n); initial_states:
    (b, h, p, n). Returns y (b, l, h, p) [and the final state]."""
    b, length, h, p = hidden_states.shape
    g, n = B.shape[2], B.shape[3]
    if dt_bias is not None:
        dt = dt + dt_bias.to(dt.dtype)
    if dt_softplus:
        dt = F.softplus(dt)
    dt = dt.float().clamp(dt_limit[0], dt_limit[1])
    x = hidden_states.float()
    pad = -length % chunk_size
    c = (length + pad) // chunk_size

    def chunks(t):  # (b, l, ...) -> (b, c, T, ...), zero-padded at the end
        t = F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))
        return t.reshape(b, c, chunk_size, *t.shape[2:])

    log_decay = chunks(dt * A.float()).permute(0, 1, 3, 2)  # (b, c, h, T)
    cum = log_decay.cumsum(-1)
    xdt = chunks(x * dt[..., None]).permute(0, 1, 3, 2, 4)  # (b, c, h, T, p)
    Bc = chunks(B.float()).permute(0, 1, 3, 2, 4)  # (b, c, g, T, n)
    Cc = chunks(C.float()).permute(0, 1, 3, 2, 4)
    heads = lambda t: t.repeat_interleave(h // g, dim=2)  # noqa: E731  (b, c, g, ...) -> (b, c, h, ...)

    # 1. Within chunks: y_i = sum_{j <= i} exp(cum_i - cum_j) (C_i . B_j) x_j dt_j
    causal = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=x.device).tril()
    decay = torch.exp((cum[..., :, None] - cum[..., None, :]).masked_fill(~causal, float("-inf")))  # (b,c,h,T,T)
    y = (heads(Cc @ Bc.transpose(-1, -2)) * decay) @ xdt  # (b, c, h, T, p)

    # 2. Each chunk's own contribution to the state at its end: sum_j exp(cum_T - cum_j) x_j dt_j B_j^T
    to_end = torch.exp(cum[..., -1:] - cum)  # (b, c, h, T)
    chunk_states = (xdt * to_end[..., None]).transpose(-1, -2) @ heads(Bc)  # (b, c, h, p, n)

    # 3. Between chunks: the state entering each chunk
    state = (initial_states.float() if initial_states is not None
             else torch.zeros(b, h, p, n, dtype=torch.float32, device=x.device))
    entering = []
    chunk_decay = torch.exp(cum[..., -1])  # (b, c, h)
    for k in range(c):
        entering.append(state)
        state = state * chunk_decay[:, k, :, None, None] + chunk_states[:, k]
    entering = torch.stack(entering, dim=1)  # (b, c, h, p, n)

    # 4. The entering state's share of each output: exp(cum_i) C_i . state
    y = y + (heads(Cc) @ entering.transpose(-1, -2)) * torch.exp(cum)[..., None]
    y = y.permute(0, 1, 3, 2, 4).reshape(b, c * chunk_size, h, p)[:, :length]
    if D is not None:
        y = y + x * D.float()[:, None]
    y = y.to(hidden_states.dtype)
    # the final state is after the last real token: padding has dt = 0 there, so it neither decays nor adds
    return (y, state) if return_final_states else y
