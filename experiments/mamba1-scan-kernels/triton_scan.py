"""An experiment: Mamba-1's selective scan in Triton against mamba_ssm's CUDA scan, on one packed layer's shapes
(7 rows x 1,024 tokens, d_inner 1,536, state 16). Agreement in fp32 and bf16, and forward / backward time for each
block configuration, to ``experiments/mamba1-scan-kernels/triton_scan.<name>.json`` (the H100 run's output is in
``triton_scan.h100.log``: it agrees to 1e-6 but is 3-4x slower, so the toolkit keeps mamba_ssm's scan).

The idea: mamba_ssm's backward gives each thread block one channel, so it adds the gradients of B and C into global
memory once per channel (d_inner atomics per element). Here a program owns ``BLOCK_D`` channels and all states of one
row, steps through the row in chunks of ``CHUNK`` tokens (``tl.associative_scan`` within a chunk, the state carried
between chunks) and sums dB and dC over its channels before adding them; the forward saves the state at every chunk
start and the backward recomputes the states chunk by chunk, newest first.

    python experiments/mamba1-scan-kernels/triton_scan.py --name h100"""
import argparse
import itertools
import json
import pathlib

import torch
import triton
import triton.language as tl
from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

CHUNK = 64  # tokens per step of the sequential loop (a parallel scan within it)
FORWARD = {"BLOCK_D": 8, "num_warps": 4}  # channels per program and warps, forward
BACKWARD = {"BLOCK_D": 8, "num_warps": 4}  # the same, backward


@triton.jit
def _affine(a1, b1, a2, b2):
    """x -> a2 (a1 x + b1) + b2: two first-order recurrence steps, the earlier first."""
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _softplus(x):
    """softplus as mamba_ssm computes it (identity above 20), log1p accurate for small exp(x)."""
    e = tl.exp(tl.minimum(x, 20.0))
    w = 1.0 + e
    log1p = tl.where(w == 1.0, e, tl.log(w) * e / (w - 1.0))
    return tl.where(x <= 20.0, log1p, x)


@triton.jit
def _load_chunk(u_ptr, dt_ptr, z_ptr, B_ptr, C_ptr, A, bias, r, d, n, t, T, su, sdt, sz, sB, sC, mask_d, mask_n):
    """One chunk's inputs: u, z (BD, CT), the step delta (BD, CT), B, C (N, CT), decay exp(delta A) and input
    delta B u (BD, N, CT), all fp32."""
    mask = mask_d[:, None] & (t < T)[None, :]
    at = d[:, None] * T + t[None, :]
    u = tl.load(u_ptr + r * su + at, mask=mask, other=0.0).to(tl.float32)
    delta = _softplus(tl.load(dt_ptr + r * sdt + at, mask=mask, other=0.0).to(tl.float32) + bias[:, None])
    z = tl.load(z_ptr + r * sz + at, mask=mask, other=0.0).to(tl.float32)
    mask_bc = mask_n[:, None] & (t < T)[None, :]
    B = tl.load(B_ptr + r * sB + n[:, None] * T + t[None, :], mask=mask_bc, other=0.0).to(tl.float32)
    C = tl.load(C_ptr + r * sC + n[:, None] * T + t[None, :], mask=mask_bc, other=0.0).to(tl.float32)
    decay = tl.exp(delta[:, None, :] * A[:, :, None])
    inputs = (delta * u)[:, None, :] * B[None, :, :]
    return u, delta, z, B, C, decay, inputs


@triton.jit
def _program(A_ptr, bias_ptr, D_ptr, Dim, N, BLOCK_D: tl.constexpr, NP: tl.constexpr, CHUNK: tl.constexpr):
    """This program's channels d (BLOCK_D,), row r, states n (NP,), chunk offsets c (CHUNK,), the masks of d and n,
    and its parameters: A (BLOCK_D, NP), the step's bias and the skip D (BLOCK_D,)."""
    d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, NP)
    mask_d, mask_n = d < Dim, n < N
    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=mask_d[:, None] & mask_n[None, :], other=0.0)
    bias = tl.load(bias_ptr + d, mask=mask_d, other=0.0)
    skip = tl.load(D_ptr + d, mask=mask_d, other=0.0)
    return d, tl.program_id(1), n, tl.arange(0, CHUNK), mask_d, mask_n, A, bias, skip


@triton.jit
def _forward(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, states_ptr,
             Dim, T, N, su, sdt, sz, sB, sC, so,
             BLOCK_D: tl.constexpr, NP: tl.constexpr, CHUNK: tl.constexpr):
    d, r, n, c, mask_d, mask_n, A, bias, skip = _program(A_ptr, bias_ptr, D_ptr, Dim, N, BLOCK_D, NP, CHUNK)
    chunks = tl.cdiv(T, CHUNK)
    state = tl.zeros((BLOCK_D, NP), dtype=tl.float32)
    for i in range(chunks):
        t = i * CHUNK + c
        u, delta, z, B, C, decay, inputs = _load_chunk(u_ptr, dt_ptr, z_ptr, B_ptr, C_ptr, A, bias, r, d, n, t, T,
                                                       su, sdt, sz, sB, sC, mask_d, mask_n)
        tl.store(states_ptr + ((r * Dim + d[:, None]) * chunks + i) * N + n[None, :], state,
                 mask=mask_d[:, None] & mask_n[None, :])
        a, b = tl.associative_scan((decay, inputs), 2, _affine)
        h = b + a * state[:, :, None]
        y = tl.sum(h * C[None, :, :], 1) + skip[:, None] * u
        out = y * z * tl.sigmoid(z)
        tl.store(out_ptr + r * so + d[:, None] * T + t[None, :], out.to(out_ptr.dtype.element_ty),
                 mask=mask_d[:, None] & (t < T)[None, :])
        state = tl.sum(tl.where(c == CHUNK - 1, h, 0.0), 2)


@triton.jit
def _backward(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, g_ptr, states_ptr,
              du_ptr, ddt_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
              Dim, T, N, su, sdt, sz, sB, sC, sg,
              BLOCK_D: tl.constexpr, NP: tl.constexpr, CHUNK: tl.constexpr):
    d, r, n, c, mask_d, mask_n, A, bias, skip = _program(A_ptr, bias_ptr, D_ptr, Dim, N, BLOCK_D, NP, CHUNK)
    mask_dn = mask_d[:, None] & mask_n[None, :]
    chunks = tl.cdiv(T, CHUNK)
    later = tl.zeros((BLOCK_D, NP), dtype=tl.float32)  # dL/dh at the first token of the chunk after this one
    dA = tl.zeros((BLOCK_D, NP), dtype=tl.float32)
    dD = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dbias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for j in range(chunks):
        i = chunks - 1 - j
        t = i * CHUNK + c
        mask = mask_d[:, None] & (t < T)[None, :]
        at = d[:, None] * T + t[None, :]
        u, delta, z, B, C, decay, inputs = _load_chunk(u_ptr, dt_ptr, z_ptr, B_ptr, C_ptr, A, bias, r, d, n, t, T,
                                                       su, sdt, sz, sB, sC, mask_d, mask_n)
        state = tl.load(states_ptr + ((r * Dim + d[:, None]) * chunks + i) * N + n[None, :], mask=mask_dn, other=0.0)
        a, b = tl.associative_scan((decay, inputs), 2, _affine)
        h = b + a * state[:, :, None]
        g = tl.load(g_ptr + r * sg + at, mask=mask, other=0.0).to(tl.float32)
        sig = tl.sigmoid(z)
        y = tl.sum(h * C[None, :, :], 1) + skip[:, None] * u
        dz = g * y * sig * (1.0 + z * (1.0 - sig))
        dy = g * z * sig
        # dL/dh_t = C_t dy_t + decay_{t+1} dL/dh_{t+1}: a reverse scan whose decays are the next token's
        t1 = t + 1
        mask1 = mask_d[:, None] & (t1 < T)[None, :]
        delta1 = _softplus(tl.load(dt_ptr + r * sdt + d[:, None] * T + t1[None, :], mask=mask1, other=0.0)
                           .to(tl.float32) + bias[:, None])
        decay1 = tl.where(mask1[:, None, :], tl.exp(delta1[:, None, :] * A[:, :, None]), 0.0)
        a, b = tl.associative_scan((decay1, dy[:, None, :] * C[None, :, :]), 2, _affine, reverse=True)
        dh = b + a * later[:, :, None]
        later = tl.sum(tl.where(c == 0, dh, 0.0), 2)
        dhB = tl.sum(dh * B[None, :, :], 1)
        dh_prev = dh * (h - inputs)  # dL/dh_t times decay_t h_{t-1}
        ddelta = u * dhB + tl.sum(dh_prev * A[:, :, None], 1)
        ddt = ddelta * tl.sigmoid(tl.load(dt_ptr + r * sdt + at, mask=mask, other=0.0).to(tl.float32)
                                  + bias[:, None])
        du = delta * dhB + skip[:, None] * dy
        dA += tl.sum(dh_prev * delta[:, None, :], 2)
        dD += tl.sum(dy * u, 1)
        dbias += tl.sum(tl.where(mask, ddt, 0.0), 1)
        tl.store(du_ptr + (r * Dim) * T + at, du.to(du_ptr.dtype.element_ty), mask=mask)
        tl.store(ddt_ptr + (r * Dim) * T + at, ddt.to(ddt_ptr.dtype.element_ty), mask=mask)
        tl.store(dz_ptr + (r * Dim) * T + at, dz.to(dz_ptr.dtype.element_ty), mask=mask)
        mask_bc = mask_n[:, None] & (t < T)[None, :]
        at_bc = (r * N + n[:, None]) * T + t[None, :]
        tl.atomic_add(dB_ptr + at_bc, tl.sum(dh * (delta * u)[:, None, :], 0), mask=mask_bc)
        tl.atomic_add(dC_ptr + at_bc, tl.sum(h * dy[:, None, :], 0), mask=mask_bc)
    tl.atomic_add(dA_ptr + d[:, None] * N + n[None, :], dA, mask=mask_dn)
    tl.atomic_add(dD_ptr + d, dD, mask=mask_d)
    tl.atomic_add(dbias_ptr + d, dbias, mask=mask_d)


def _strides(*tensors) -> list[int]:
    """Row strides of (R, C, T) tensors whose channels and tokens are contiguous (T, 1)."""
    for x in tensors:
        if x.stride(-1) != 1 or x.stride(-2) != x.shape[-1]:
            raise ValueError(f"the Triton scan needs contiguous channels and tokens, got strides {x.stride()}")
    return [x.stride(0) for x in tensors]


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, dt, A, B, C, D, z, delta_bias):
        R, Dim, T = u.shape
        N = A.shape[1]
        A, D, delta_bias = A.float().contiguous(), D.float().contiguous(), delta_bias.float().contiguous()
        out = torch.empty(R, Dim, T, device=u.device, dtype=u.dtype)
        states = torch.empty(R, Dim, triton.cdiv(T, CHUNK), N, device=u.device, dtype=torch.float32)
        grid = (triton.cdiv(Dim, FORWARD["BLOCK_D"]), R)
        _forward[grid](u, dt, A, B, C, D, z, delta_bias, out, states, Dim, T, N, *_strides(u, dt, z, B, C, out),
                       NP=triton.next_power_of_2(N), CHUNK=CHUNK, **FORWARD)
        ctx.save_for_backward(u, dt, A, B, C, D, z, delta_bias, states)
        return out

    @staticmethod
    def backward(ctx, g):
        u, dt, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
        R, Dim, T = u.shape
        N = A.shape[1]
        g = g.contiguous()
        du, ddt, dz = (torch.empty(R, Dim, T, device=u.device, dtype=x.dtype) for x in (u, dt, z))
        dA, dD, dbias = torch.zeros_like(A), torch.zeros_like(D), torch.zeros_like(delta_bias)
        dB = torch.zeros(R, N, T, device=u.device, dtype=torch.float32)
        dC = torch.zeros_like(dB)
        grid = (triton.cdiv(Dim, BACKWARD["BLOCK_D"]), R)
        _backward[grid](u, dt, A, B, C, D, z, delta_bias, g, states, du, ddt, dz, dA, dB, dC, dD, dbias,
                        Dim, T, N, *_strides(u, dt, z, B, C, g), NP=triton.next_power_of_2(N), CHUNK=CHUNK,
                        **BACKWARD)
        return du, ddt, dA, dB.to(B.dtype), dC.to(C.dtype), dD, dz, dbias


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """mamba_ssm's ``selective_scan_fn`` for u, delta, z (R, C, T), A (C, N), B, C (R, N, T), D, delta_bias (C,), with
    ``delta_softplus=True``."""
    if D is None or z is None or delta_bias is None or not delta_softplus:
        raise ValueError("the Triton scan needs D, z, delta_bias and delta_softplus=True")
    return _SelectiveScan.apply(u, delta, A, B, C, D, z, delta_bias)


def inputs(R, Dim, T, N, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    rand = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    sep = torch.zeros(R, 1, T, dtype=torch.bool, device="cuda")
    sep[:, :, 300:303] = True
    sep[:, :, 700:703] = True
    xz = rand(R, 2 * Dim, T).to(dtype)
    dt = torch.where(sep, 2.0**24, rand(R, Dim, T) * 0.5).to(dtype)
    BC = rand(R, 2 * N + 48, T).to(dtype)
    return {"u": xz[:, :Dim].contiguous(), "delta": dt, "A": -torch.exp(rand(Dim, N).mul(0.5) + 1.0),
            "B": torch.where(sep, 0.0, BC[:, 48:48 + N]), "C": BC[:, 48 + N:], "D": rand(Dim),
            "z": xz[:, Dim:], "delta_bias": rand(Dim).mul(0.5) - 4.0, "g": rand(R, Dim, T).to(dtype)}


def run(fn, x):
    leaves = {k: v.detach().requires_grad_() for k, v in x.items() if k != "g"}
    y = fn(**leaves, delta_softplus=True)
    grads = torch.autograd.grad(y, list(leaves.values()), x["g"])
    return [y, *grads]


def rel(a, b):
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


def timed(fn, repeat=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeat


def main():
    global CHUNK, FORWARD, BACKWARD
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="h100")
    args = parser.parse_args()
    out = pathlib.Path(__file__).parent / f"triton_scan.{args.name}.json"
    R, Dim, T, N = 7, 1536, 1024, 16
    names = ["out", "du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias"]
    result = {"device": torch.cuda.get_device_name(), "shape": {"rows": R, "d_inner": Dim, "length": T, "state": N},
              "agreement": {}, "mamba_ssm": {}, "triton": []}
    ref32 = run(selective_scan_fn, inputs(R, Dim, T, N, torch.float32))
    for dtype in (torch.float32, torch.bfloat16):
        x = inputs(R, Dim, T, N, dtype)
        ours, theirs = run(selective_scan, x), run(selective_scan_fn, x)
        label = str(dtype).split(".")[-1]
        result["agreement"][label] = {
            "triton_vs_mamba_ssm": {k: rel(a, b) for k, a, b in zip(names, ours, theirs)},
            "triton_vs_fp32": {k: rel(a, b) for k, a, b in zip(names, ours, ref32)},
            "mamba_ssm_vs_fp32": {k: rel(a, b) for k, a, b in zip(names, theirs, ref32)}}
        print(label, json.dumps(result["agreement"][label]), flush=True)

    x = {k: v.detach().requires_grad_(k != "g") for k, v in inputs(R, Dim, T, N, torch.bfloat16).items()}
    leaves = [v for k, v in x.items() if k != "g"]

    def fwd(fn):
        return lambda: fn(**{k: v for k, v in x.items() if k != "g"}, delta_softplus=True)

    def bwd(fn):
        y = fwd(fn)()
        return lambda: torch.autograd.grad(y, leaves, x["g"], retain_graph=True)

    result["mamba_ssm"] = {"forward_ms": timed(fwd(selective_scan_fn)), "backward_ms": timed(bwd(selective_scan_fn))}
    print("mamba_ssm", result["mamba_ssm"], flush=True)
    for chunk, block, warps in itertools.product((32, 64), (4, 8, 16), (2, 4, 8)):
        CHUNK = chunk
        FORWARD = BACKWARD = {"BLOCK_D": block, "num_warps": warps}
        try:
            row = {"chunk": chunk, "block_d": block, "num_warps": warps,
                   "forward_ms": timed(fwd(selective_scan)),
                   "backward_ms": timed(bwd(selective_scan))}
        except Exception as error:  # e.g. out of shared memory for the largest tiles
            row = {"chunk": chunk, "block_d": block, "num_warps": warps, "error": str(error).splitlines()[0][:200]}
        result["triton"].append(row)
        print(row, flush=True)
        out.write_text(json.dumps(result, indent=1))  # after every row: compiling each configuration takes a while


if __name__ == "__main__":
    main()
