"""Mamba-2's chunked scan (state-space duality) in PyTorch, for CPUs and GPUs without mamba_ssm.

Within a chunk the scan is a masked, decayed "attention" computed with batched matmuls; between chunks a short loop
carries the state (a sequence of 512 tokens in chunks of 32 takes 16 steps). transformers' reference broadcasts
multiplies over permuted 5-d tensors instead, which on an H100 is several times slower and on CPUs slower still.
Same signature as transformers' ``mamba2_chunk_scan`` (``mamba_chunk_scan_combined``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def chunk_scan(hidden_states, dt, A, B, C, chunk_size, D=None, dt_bias=None, initial_states=None, dt_softplus=False,
               dt_limit=(0.0, float("inf")), return_final_states=False, seq_idx=None, **kwargs):
    """hidden_states: (b, l, h, p); dt: (b, l, h); A, D, dt_bias: (h,); B, C: (b, l, g, n); initial_states:
    (b, h, p, n); seq_idx: (b, l) ids of the sequences packed into each row (non-decreasing), whose states do not
    mix (as mamba_ssm's). Returns y (b, l, h, p) [and the final state]."""
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
    # (b, c, g, ...) -> (b, c, h, ...)
    heads = (lambda t: t) if g == h else (lambda t: t.repeat_interleave(h // g, dim=2))  # noqa: E731

    # Packed rows: which positions share a sequence (padding continues the last one)
    seq = chunks(seq_idx[..., None])[..., 0] if seq_idx is not None else None  # (b, c, T)
    if seq is not None and pad:
        seq[:, -1, chunk_size - pad:] = seq[:, -1, chunk_size - pad - 1:chunk_size - pad]
    previous = torch.cat([seq[:, :1, :1], seq[:, :-1, -1:]], dim=1) if seq is not None else None  # (b, c, 1)

    # 1. Within chunks: y_i = sum_{j <= i} exp(cum_i - cum_j) (C_i . B_j) x_j dt_j
    causal = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=x.device).tril()
    if seq is not None:
        causal = causal & (seq[..., :, None] == seq[..., None, :])[:, :, None]  # (b, c, 1, T, T)
    decay = torch.exp((cum[..., :, None] - cum[..., None, :]).masked_fill(~causal, float("-inf")))  # (b,c,h,T,T)
    y = (heads(Cc @ Bc.transpose(-1, -2)) * decay) @ xdt  # (b, c, h, T, p)

    # 2. Each chunk's own contribution to the state at its end: sum_j exp(cum_T - cum_j) x_j dt_j B_j^T
    to_end = torch.exp(cum[..., -1:] - cum)  # (b, c, h, T)
    if seq is not None:
        to_end = to_end * (seq == seq[..., -1:])[:, :, None]  # only the chunk's last sequence reaches its end
    chunk_states = (xdt * to_end[..., None]).transpose(-1, -2) @ heads(Bc)  # (b, c, h, p, n)

    # 3. Between chunks: the state entering each chunk
    state = (initial_states.float() if initial_states is not None
             else torch.zeros(b, h, p, n, dtype=torch.float32, device=x.device))
    entering = []
    chunk_decay = torch.exp(cum[..., -1])  # (b, c, h)
    if seq is not None:  # a state survives a chunk only if the chunk ends in the sequence it came from
        chunk_decay = chunk_decay * (seq[..., -1] == previous[..., 0])[..., None]
    for k in range(c):
        entering.append(state)
        state = state * chunk_decay[:, k, :, None, None] + chunk_states[:, k]
    entering = torch.stack(entering, dim=1)  # (b, c, h, p, n)

    # 4. The entering state's share of each output: exp(cum_i) C_i . state
    carried = torch.exp(cum)
    if seq is not None:
        carried = carried * (seq == previous)[:, :, None]
    y = y + (heads(Cc) @ entering.transpose(-1, -2)) * carried[..., None]
    y = y.permute(0, 1, 3, 2, 4).reshape(b, c * chunk_size, h, p)[:, :length]
    if D is not None:
        y = y + x * D.float()[:, None]
    y = y.to(hidden_states.dtype)
    # the final state is after the last real token: padding has dt = 0 there, so it neither decays nor adds
    return (y, state) if return_final_states else y


def causal_conv1d(hidden_states, weight, bias=None, activation=None, seq_idx=None, **kwargs):
    """Depthwise causal convolution (b, d, l) -> (b, d, l) whose window does not reach back into the previous
    sequence of a packed row (``seq_idx`` (b, l)); same signature as transformers' ``causal_conv1d_fn``."""
    from transformers.activations import ACT2FN

    width, length = weight.shape[-1], hidden_states.shape[-1]
    x = hidden_states.to(weight.dtype)
    if seq_idx is None:
        out = F.conv1d(x, weight.unsqueeze(1), bias, padding=width - 1, groups=x.shape[1])[..., :length]
    else:
        out = x * weight[:, -1:] + (bias[:, None] if bias is not None else 0)
        for shift in range(1, width):  # one term per tap, each masked where it crosses a sequence boundary
            same = (seq_idx[:, shift:] == seq_idx[:, :-shift])[:, None]
            out[..., shift:] = out[..., shift:] + x[..., :-shift] * weight[:, -1 - shift:width - shift] * same
    if activation is not None:
        out = ACT2FN[activation](out)
    return out.to(hidden_states.dtype)


def split_conv1d_scan(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, chunk_size, seq_idx=None,
                      dt_limit=(0.0, float("inf")), activation="silu", rmsnorm_weight=None, rmsnorm_eps=1e-6,
                      outproj_weight=None, outproj_bias=None, headdim=None, ngroups=1, norm_before_gate=False,
                      chunk_scan=chunk_scan, conv=causal_conv1d):
    """mamba_ssm's ``mamba_split_conv1d_scan_combined`` with ``chunk_scan`` and ``conv`` (by default ours), for what
    ``Mamba2Mixer`` passes it: the in-projection's output (b, l, z + xBC + dt) -> the convolution, the chunk scan,
    the gated RMSNorm (gate before the norm, in fp32, as transformers' ``MambaRMSNormGated``) and the
    out-projection: (b, l, out_dim)."""
    if norm_before_gate or rmsnorm_weight is None or outproj_weight is None:
        raise ValueError("only Mamba2Mixer's gated RMSNorm (gate before the norm) and out-projection are implemented")
    b, length = zxbcdt.shape[:2]
    heads = D.shape[0]
    dim = heads * headdim
    state = (conv1d_weight.shape[0] - dim) // ngroups // 2
    z, xbc, dt = zxbcdt.split([dim, dim + 2 * ngroups * state, heads], dim=-1)
    xbc = conv(xbc.transpose(1, 2), conv1d_weight, conv1d_bias, activation=activation, seq_idx=seq_idx)
    x, B, C = xbc.transpose(1, 2).split([dim, ngroups * state, ngroups * state], dim=-1)
    y = chunk_scan(x.reshape(b, length, heads, headdim), dt, A, B.reshape(b, length, ngroups, state),
                   C.reshape(b, length, ngroups, state), chunk_size, D=D, dt_bias=dt_bias, dt_softplus=True,
                   dt_limit=dt_limit, seq_idx=seq_idx).reshape(b, length, dim)
    gated = (y.float() * F.silu(z.float())).view(b, length, ngroups, -1)
    normed = gated * torch.rsqrt(gated.pow(2).mean(-1, keepdim=True) + rmsnorm_eps)
    out = rmsnorm_weight * normed.view(b, length, dim).to(y.dtype)
    return F.linear(out.to(outproj_weight.dtype), outproj_weight, outproj_bias)
