"""BiMamba-2's token mixing for CPU inference as one compiled loop (numba) instead of ~50 PyTorch operations.

Between its in- and out-projections a BiMamba-2 mixer is a depthwise convolution, SiLU, a selective scan and a gated
RMSNorm per head, run forwards and backwards. On a CPU, PyTorch runs these as separate passes over (batch, length,
1,548) tensors, each a trip to memory, which made the mixer cost more than the projections around it. Every head of
every row is independent (its own x, B, C, dt, gate and norm group), so here each is one job that reads its channels
of the projections once and, token by token in both directions, convolves them, applies SiLU, steps the recurrence
h_t = exp(dt_t A) h_t-1 + dt_t B_t x_t, y_t = C_t h_t + D x_t and the gated norm, and writes the directions' sum.
It computes what ``BiMamba2Mixer._scan`` does, in fp32 to ~1e-6, for inference only: no gradients.

What makes the loops vectorise: the head's sizes are compile-time constants (:func:`_mixer`); SiLU's ``exp`` is
Cephes' single-precision polynomial (:func:`_silu`; within 1 ulp of PyTorch's exp) rather than libm's, which LLVM
calls one value at a time, and SiLU runs over all of a head's convolved inputs at once, before the recurrence; and
IEEE division (``error_model="numpy"``: numba's default checks each division for zero, which kept SiLU scalar)."""
from __future__ import annotations

import functools

import numba
import numpy as np
import torch
import torch.nn.functional as F

# Cephes' expf: exp(x) = 2^k exp(r), r = x - k ln 2 (ln 2 split in two), exp(r) by a degree-7 polynomial
_LOG2E, _LN2_HI, _LN2_LO = np.float32(1.44269504088896341), np.float32(0.693359375), np.float32(-2.12194440e-4)
_P = tuple(np.float32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                                   1.6666665459e-1, 5.0000001201e-1))
_LOW, _HIGH = np.float32(-87.3), np.float32(88.3)  # 2^k stays a normal float


@numba.njit(cache=True, error_model="numpy")
def _silu(x, scratch, bits):
    """x *= sigmoid(x) in place for a float32 array, vectorised; ``scratch`` (float32) and ``bits`` (int32) are as
    long as ``x``."""
    p0, p1, p2, p3, p4, p5 = _P
    powers = bits.view(np.float32)
    for i in range(x.shape[0]):  # exp(-x) = 2^k (polynomial in r)
        v = min(max(-x[i], _LOW), _HIGH)
        k = np.floor(v * _LOG2E + np.float32(0.5))
        r = v - k * _LN2_HI - k * _LN2_LO
        scratch[i] = ((((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5) * r * r + r + np.float32(1.0))
        bits[i] = (np.int32(k) + np.int32(127)) << np.int32(23)
    for i in range(x.shape[0]):
        x[i] = x[i] / (np.float32(1.0) + scratch[i] * powers[i])


@numba.njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def _gated_norms(y, gate, norm_w, eps, out, at):
    """out[t, at:at + d] = (rmsnorm(y[0, t] * gate[t]) + rmsnorm(y[1, t] * gate[t])) * norm_w for every token t:
    both directions' gated RMSNorms, summed; y (2, n, d), gate (n, d). Sums of squares in any order (vectorised)."""
    d = y.shape[2]
    for t in range(y.shape[1]):
        forward, backward = np.float32(0.0), np.float32(0.0)
        for i in range(d):
            y[0, t, i] *= gate[t, i]
            y[1, t, i] *= gate[t, i]
            forward += y[0, t, i] * y[0, t, i]
            backward += y[1, t, i] * y[1, t, i]
        forward = np.float32(1.0 / np.sqrt(forward / d + eps))
        backward = np.float32(1.0 / np.sqrt(backward / d + eps))
        for i in range(d):
            out[t, at + i] = (y[0, t, i] * forward + y[1, t, i] * backward) * norm_w[i]


@functools.cache
def _mixer(heads: int, head_dim: int, state: int, width: int):
    """The mixer compiled for one shape; numba freezes a closure's variables as constants, so the loops over the
    head's sizes are unrolled and vectorised."""
    inner = heads * head_dim
    size = head_dim + 2 * state  # one head's x | B | C

    @numba.njit(cache=True, parallel=True, error_model="numpy")
    def mix(rows, lengths, weight, bias, dts, decays, D, norm_weight, eps, outs):
        """One job per (row, head), in parallel: a job reads its row ``projected`` (l, z | x B C) and writes its
        head's share of ``out`` (l, inner), both directions. C_t h_t is summed into four accumulators in turn (state
        index mod 4), so that four chains of additions run at once rather than one. (The loops are inline: a
        parallel function calling another compiled closure missed numba's cache in every new process.)"""
        for job in numba.prange(rows.shape[0] * heads):
            r, h = job // heads, job % heads
            projected, n, out = rows[r], lengths[r], outs[r]
            dt, decay, skip = dts[r, :, h], decays[r, :, h], D[h]
            norm_w = norm_weight[h * head_dim:(h + 1) * head_dim]
            starts = (h * head_dim, inner + h * state, inner + (heads + h) * state)  # in the x B C channels
            w = np.empty((width, size), dtype=np.float32)  # this head's convolution, its x | B | C side by side
            b = np.empty(size, dtype=np.float32)
            for part in range(3):
                count, at = (head_dim, 0) if part == 0 else (state, head_dim + (part - 1) * state)
                for i in range(count):
                    b[at + i] = bias[starts[part] + i]
                    for tap in range(width):
                        w[tap, at + i] = weight[tap, starts[part] + i]
            length = projected.shape[0]
            z = h * head_dim
            for t in range(n, length):
                for i in range(head_dim):
                    out[t, z + i] = 0.0
            # this head's x | B | C for every token side by side; both directions' convolutions; SiLU over them all
            inputs = np.empty((n, size), dtype=np.float32)
            for t in range(n):
                row = projected[t]
                for i in range(head_dim):
                    inputs[t, i] = row[inner + starts[0] + i]
                for i in range(state):
                    inputs[t, head_dim + i] = row[inner + starts[1] + i]
                    inputs[t, head_dim + state + i] = row[inner + starts[2] + i]
            conv = np.empty((2, n, size), dtype=np.float32)
            for direction in range(2):
                step = 1 if direction == 0 else -1
                for t in range(n):
                    v = conv[direction, t]
                    for c in range(size):
                        v[c] = b[c]
                    for tap in range(width):  # tap 0 is this token, tap i the i-th before it in the scan's direction
                        u = t - step * tap
                        if 0 <= u < n:
                            source, taps = inputs[u], w[width - 1 - tap]
                            for c in range(size):
                                v[c] += taps[c] * source[c]
            gate = np.empty((n, head_dim), dtype=np.float32)
            for t in range(n):
                for i in range(head_dim):
                    gate[t, i] = projected[t, z + i]
            scratch = np.empty(2 * n * size, dtype=np.float32)
            bits = np.empty(2 * n * size, dtype=np.int32)
            _silu(conv.reshape(2 * n * size), scratch, bits)
            _silu(gate.reshape(n * head_dim), scratch, bits)
            s = np.empty((state, head_dim), dtype=np.float32)
            y = np.empty((2, n, head_dim), dtype=np.float32)
            partial = np.empty((4, head_dim), dtype=np.float32)
            for direction in range(2):
                s[:] = 0.0
                for k in range(n):
                    t = k if direction == 0 else n - 1 - k
                    v, a, d = conv[direction, t], decay[t], dt[t]
                    partial[:] = 0.0
                    for j in range(state):
                        bj, cj, q = v[head_dim + j] * d, v[head_dim + state + j], j % 4
                        for i in range(head_dim):
                            value = s[j, i] * a + v[i] * bj
                            s[j, i] = value
                            partial[q, i] += value * cj
                    for i in range(head_dim):
                        y[direction, t, i] = ((partial[0, i] + partial[1, i]) + (partial[2, i] + partial[3, i])
                                              + skip * v[i])
            _gated_norms(y, gate, norm_w, eps, out, z)

    return mix


def bidirectional_mix(zxbc: torch.Tensor, dt: torch.Tensor, mask: torch.Tensor, conv_weight: torch.Tensor,
                      conv_bias: torch.Tensor, dt_bias: torch.Tensor, A: torch.Tensor, D: torch.Tensor,
                      norm_weight: torch.Tensor, heads: int, head_dim: int, state: int,
                      eps: float = 1e-6) -> torch.Tensor:
    """The in-projections of a right-padded batch, ``zxbc`` (b, l, z | x B C) and ``dt`` (b, l, heads), ->
    (b, l, heads * head_dim): both directions' gated, normed scan outputs summed (zero at pads), in fp32. Only the
    real tokens (``mask``) are read, so the projections need not be zero at pads. ``conv_weight``: (channels, width).
    """
    def array(t):
        return t.detach().float().contiguous().numpy()

    b, length, _ = zxbc.shape
    dt = F.softplus(dt.detach().float() + dt_bias.float())
    out = torch.empty(b, length, heads * head_dim, dtype=torch.float32)
    numba.set_num_threads(min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    _mixer(heads, head_dim, state, conv_weight.shape[1])(
        array(zxbc), mask.sum(-1).to(torch.int64).numpy(), array(conv_weight.T), array(conv_bias), array(dt),
        array(torch.exp(dt * A.float())), array(D), array(norm_weight), eps, out.numpy())
    return out
