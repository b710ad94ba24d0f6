"""An experiment: Mamba-1's selective scan as a sequential loop over time in Gluon (Triton's explicit-layout
dialect, Triton >= 3.6), forward and backward, against mamba_ssm's CUDA scan, on packed rows as the toolkit builds
them (7 x 1,024 tokens: a training step; 13 x 1,024: a reranking batch; 14 x 512), d_inner 1,536, state 16, with
separators (step 2^24, B zero) every 97 tokens. Agreement of the output and every gradient, and median times per
configuration (of the whole call, fresh leaf copies of the inputs included for both scans), to
``experiments/mamba1-scan-kernels/seq_scan.<name>.json``.

The idea: mamba_ssm gives each thread block one channel and runs a parallel block scan per state, with barriers, and
its backward adds dB and dC into global memory once per channel. Here ``lanes`` threads share a channel, each holding
16 / ``lanes`` of its states in registers, and step through time ``steps`` tokens at a time (one vector load per
input): no block scan, and the output sums a channel's states across its lanes with shuffles. The backward
recomputes each group of steps from the state the forward saved at its start (fp32), walks it newest first, and sums
dB and dC over the program's channels before adding them to global memory.

The H100 run (``seq_scan.h100.json``): it agrees with mamba_ssm to 3e-6 in fp32 (every gradient, separators
included), but in bf16 its best forward is 0.66-0.97x mamba_ssm's and its forward + backward 0.43-0.48x (the
backward's cross-lane and cross-warp sums of dB, dC and the per-step state sums cost more than mamba_ssm's block
scans), so the toolkit keeps mamba_ssm's scan.

    python experiments/mamba1-scan-kernels/seq_scan.py --name h100"""
import argparse
import itertools
import json
import pathlib
import statistics

import torch
from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from mamba_pyserini.modeling.packing import RESET_STEP

NAMES = ("out", "u", "delta", "A", "B", "C", "D", "z", "delta_bias")


@gluon.jit
def _pick(tile, index, j: gl.constexpr, axis: gl.constexpr):
    """Step ``j`` of a tile each thread holds whole along ``axis`` (a register read, once compiled)."""
    return gl.sum(gl.where(index == j, tile, -0.0), axis)


@gluon.jit
def _softplus(x):
    return gl.where(x <= 20.0, gl.log(1.0 + gl.exp(x)), x)


@gluon.jit
def _inputs(u_ptr, dt_ptr, z_ptr, B_ptr, C_ptr, bias, r, t0, dt, rows, n3, t3, c3,
            su, sud, sdt, sdtd, sz, szd, sB, sBn, sC, sCn):
    """One group's inputs in fp32: u, softplus step, its pre-activation and z (STEPS, BD); B and C (N, STEPS, BD),
    the same in every channel."""
    u = gl.load(u_ptr + r * su + dt * sud + rows + t0).to(gl.float32)
    x = gl.load(dt_ptr + r * sdt + dt * sdtd + rows + t0).to(gl.float32) + bias
    z = gl.load(z_ptr + r * sz + dt * szd + rows + t0).to(gl.float32)
    B = gl.load(B_ptr + r * sB + n3 * sBn + t3 + t0 + c3).to(gl.float32)
    C = gl.load(C_ptr + r * sC + n3 * sCn + t3 + t0 + c3).to(gl.float32)
    return u, _softplus(x), x, z, B, C


@gluon.jit
def _setup(A_ptr, bias_ptr, D_ptr, saved_ptr, T, Dim, N: gl.constexpr, STEPS: gl.constexpr, BD: gl.constexpr,
           L3: gl.constexpr):
    """A program's row, channel and step indices, its A (N, BD), delta bias and D (1, BD), and where its saved states
    lie."""
    LS: gl.constexpr = gl.SliceLayout(1, L3)
    LT: gl.constexpr = gl.SliceLayout(0, L3)
    r = gl.program_id(1)
    d0 = gl.program_id(0) * BD
    d = gl.expand_dims(d0 + gl.arange(0, BD, layout=gl.SliceLayout(0, LS)), 0)  # (1, BD) beside the state
    n = gl.expand_dims(gl.arange(0, N, layout=gl.SliceLayout(1, LS)), 1)  # (N, 1)
    dt = gl.expand_dims(d0 + gl.arange(0, BD, layout=gl.SliceLayout(0, LT)), 0)  # (1, BD) beside per-step values
    rows = gl.expand_dims(gl.arange(0, STEPS, layout=gl.SliceLayout(1, LT)), 1)  # (STEPS, 1)
    n3 = gl.expand_dims(gl.expand_dims(gl.arange(0, N, layout=gl.SliceLayout(1, gl.SliceLayout(2, L3))), 1), 2)
    t3 = gl.expand_dims(gl.expand_dims(gl.arange(0, STEPS, layout=gl.SliceLayout(0, gl.SliceLayout(2, L3))), 0), 2)
    c3 = gl.expand_dims(gl.expand_dims(gl.arange(0, BD, layout=gl.SliceLayout(0, gl.SliceLayout(1, L3))), 0), 1) * 0
    A = gl.load(A_ptr + d * N + n)
    saved = saved_ptr + r * (T // STEPS) * Dim * N + d * N + n
    return r, d, n, dt, rows, n3, t3, c3, A, gl.load(bias_ptr + dt), gl.load(D_ptr + dt), saved


@gluon.jit
def _row(tile, rows, j: gl.constexpr, layout: gl.constexpr):
    """Step ``j`` of a (STEPS, BD) tile as a (1, BD) row in ``layout``'s parent (the state's)."""
    return gl.expand_dims(gl.convert_layout(_pick(tile, rows, j, 0), layout), 0)


@gluon.jit
def _advance(h, A2, delta, du, B, rows, t3, j: gl.constexpr, LV: gl.constexpr):
    """The state after step ``j``: exp(delta A) h + delta u B."""
    return gl.exp2(_row(delta, rows, j, LV) * A2) * h + _pick(B, t3, j, 1) * _row(du, rows, j, LV)


@gluon.jit
def _forward(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, saved_ptr, T, Dim,
             su, sud, sdt, sdtd, sB, sBn, sC, sCn, sz, szd, so, sod,
             N: gl.constexpr, LANES: gl.constexpr, STEPS: gl.constexpr, WARPS: gl.constexpr, SAVE: gl.constexpr):
    # (states, steps, channels): a thread holds N / LANES states of one channel over STEPS steps
    L3: gl.constexpr = gl.BlockedLayout([N // LANES, STEPS, 1], [LANES, 1, 32 // LANES], [1, 1, WARPS], [1, 0, 2])
    LS: gl.constexpr = gl.SliceLayout(1, L3)  # (N, BD): the state
    LT: gl.constexpr = gl.SliceLayout(0, L3)  # (STEPS, BD): per-step values
    BD: gl.constexpr = 32 // LANES * WARPS
    r, d, n, dt, rows, n3, t3, c3, A, bias, skip, saved = _setup(A_ptr, bias_ptr, D_ptr, saved_ptr, T, Dim, N, STEPS,
                                                                  BD, L3)
    A2 = A * 1.4426950408889634  # for exp2
    h = gl.zeros([N, BD], gl.float32, LS)
    for g in range(0, T // STEPS):
        t0 = g * STEPS
        if SAVE:
            gl.store(saved + g * Dim * N, h)
        u, delta, x, z, B, C = _inputs(u_ptr, dt_ptr, z_ptr, B_ptr, C_ptr, bias, r, t0, dt, rows, n3, t3, c3,
                                       su, sud, sdt, sdtd, sz, szd, sB, sBn, sC, sCn)
        du = delta * u
        y = gl.zeros([STEPS, BD], gl.float32, LT)
        for j in gl.static_range(STEPS):
            h = _advance(h, A2, delta, du, B, rows, t3, j, gl.SliceLayout(0, LS))
            out = gl.convert_layout(gl.sum(h * _pick(C, t3, j, 1), 0), gl.SliceLayout(0, LT))
            y = gl.where(rows == j, gl.expand_dims(out, 0), y)
        y = (y + skip * u) * z / (1.0 + gl.exp(-z))
        gl.store(out_ptr + r * so + dt * sod + rows + t0, y.to(out_ptr.dtype.element_ty))


@gluon.jit
def _backward(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, saved_ptr, dout_ptr,
              du_ptr, ddt_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, T, Dim,
              su, sud, sdt, sdtd, sB, sBn, sC, sCn, sz, szd, sg, sgd,
              N: gl.constexpr, LANES: gl.constexpr, STEPS: gl.constexpr, WARPS: gl.constexpr):
    L3: gl.constexpr = gl.BlockedLayout([N // LANES, STEPS, 1], [LANES, 1, 32 // LANES], [1, 1, WARPS], [1, 0, 2])
    LS: gl.constexpr = gl.SliceLayout(1, L3)
    LT: gl.constexpr = gl.SliceLayout(0, L3)
    LV: gl.constexpr = gl.SliceLayout(0, LS)  # (BD,) beside the state
    LTV: gl.constexpr = gl.SliceLayout(0, LT)  # (BD,) beside per-step values
    BD: gl.constexpr = 32 // LANES * WARPS
    r, d, n, dt, rows, n3, t3, c3, A, bias, skip, saved = _setup(A_ptr, bias_ptr, D_ptr, saved_ptr, T, Dim, N, STEPS,
                                                                  BD, L3)
    n2 = gl.expand_dims(gl.arange(0, N, layout=gl.SliceLayout(1, gl.SliceLayout(2, L3))), 1)  # (N, 1) of (N, STEPS)
    t2 = gl.expand_dims(gl.arange(0, STEPS, layout=gl.SliceLayout(0, gl.SliceLayout(2, L3))), 0)  # (1, STEPS)
    A2 = A * 1.4426950408889634
    carry = gl.zeros([N, BD], gl.float32, LS)  # d loss / d state after the group, times the next step's decay
    dA = gl.zeros([N, BD], gl.float32, LS)
    dD = gl.zeros([BD], gl.float32, LTV)
    dbias = gl.zeros([BD], gl.float32, LTV)
    groups = T // STEPS
    for i in range(0, groups):
        g = groups - 1 - i
        t0 = g * STEPS
        u, delta, x, z, B, C = _inputs(u_ptr, dt_ptr, z_ptr, B_ptr, C_ptr, bias, r, t0, dt, rows, n3, t3, c3,
                                       su, sud, sdt, sdtd, sz, szd, sB, sBn, sC, sCn)
        dout = gl.load(dout_ptr + r * sg + dt * sgd + rows + t0).to(gl.float32)
        gate = 1.0 / (1.0 + gl.exp(-z))
        dy = dout * z * gate
        du = delta * u
        # the group's forward again, from its saved state: states before each step, outputs, dC
        h = gl.load(saved + g * Dim * N)
        before = gl.zeros([N, STEPS, BD], gl.float32, L3)
        dC = gl.zeros([N, STEPS, BD], gl.float32, L3)
        y = gl.zeros([STEPS, BD], gl.float32, LT)
        for j in gl.static_range(STEPS):
            before = gl.where(t3 == j, gl.expand_dims(h, 1), before)
            h = _advance(h, A2, delta, du, B, rows, t3, j, LV)
            y = gl.where(rows == j, gl.expand_dims(gl.convert_layout(gl.sum(h * _pick(C, t3, j, 1), 0), LTV), 0), y)
            dC = gl.where(t3 == j, gl.expand_dims(h * _row(dy, rows, j, LV), 1), dC)
        gl.store(dz_ptr + r * sz + dt * szd + rows + t0,
                 (dout * (y + skip * u) * gate * (1.0 + z * (1.0 - gate))).to(dz_ptr.dtype.element_ty))
        dD += gl.sum(dy * u, 0)
        # newest step first: d loss / d state, and the step's gradients
        dB = gl.zeros([N, STEPS, BD], gl.float32, L3)
        gB = gl.zeros([STEPS, BD], gl.float32, LT)  # sum over states of d state * B
        gAh = gl.zeros([STEPS, BD], gl.float32, LT)  # sum over states of d state * A * decay * previous state
        for k in gl.static_range(STEPS - 1, -1, -1):
            step = _row(delta, rows, k, LV)
            decay = gl.exp2(step * A2)
            grad = _row(dy, rows, k, LV) * _pick(C, t3, k, 1) + carry
            q = grad * _pick(before, t3, k, 1) * decay
            dA += q * step
            gAh = gl.where(rows == k, gl.expand_dims(gl.convert_layout(gl.sum(q * A, 0), LTV), 0), gAh)
            gB = gl.where(rows == k, gl.expand_dims(gl.convert_layout(gl.sum(grad * _pick(B, t3, k, 1), 0), LTV), 0),
                          gB)
            dB = gl.where(t3 == k, gl.expand_dims(grad * _row(du, rows, k, LV), 1), dB)
            carry = decay * grad
        ddt = (gAh + gB * u) * gl.where(x <= 20.0, 1.0 / (1.0 + gl.exp(-x)), 1.0)
        dbias += gl.sum(ddt, 0)
        gl.store(ddt_ptr + r * sdt + dt * sdtd + rows + t0, ddt.to(ddt_ptr.dtype.element_ty))
        gl.store(du_ptr + r * su + dt * sud + rows + t0, (dy * skip + gB * delta).to(du_ptr.dtype.element_ty))
        at = r * N * T + n2 * T + t2 + t0
        gl.atomic_add(dB_ptr + at, gl.sum(dB, 2))
        gl.atomic_add(dC_ptr + at, gl.sum(dC, 2))
    gl.store(dA_ptr + r * Dim * N + d * N + n, dA)
    gl.store(dD_ptr + r * Dim + dt, gl.expand_dims(dD, 0))
    gl.store(dbias_ptr + r * Dim + dt, gl.expand_dims(dbias, 0))


class _Scan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, save, lanes, steps, warps):
        R, Dim, T = u.shape
        N = A.shape[1]
        A, D, delta_bias = A.float().contiguous(), D.float().contiguous(), delta_bias.float().contiguous()
        out = torch.empty_like(u, memory_format=torch.contiguous_format)
        saved = u.new_empty((R, T // steps, Dim, N) if save else (1,), dtype=torch.float32)
        _forward[(Dim // (32 // lanes * warps), R)](
            u, delta, A, B, C, D, z, delta_bias, out, saved, T, Dim, *u.stride()[:2], *delta.stride()[:2],
            *B.stride()[:2], *C.stride()[:2], *z.stride()[:2], *out.stride()[:2],
            N=N, LANES=lanes, STEPS=steps, WARPS=warps, SAVE=save, num_warps=warps)
        if save:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, saved)
            ctx.config = (lanes, steps, warps)
        return out

    @staticmethod
    def backward(ctx, dout):
        u, delta, A, B, C, D, z, delta_bias, saved = ctx.saved_tensors
        lanes, steps, warps = ctx.config
        R, Dim, T = u.shape
        N = A.shape[1]
        dout = dout if dout.stride(2) == 1 else dout.contiguous()
        du, ddelta, dz = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (u, delta, z))
        dB, dC = (u.new_zeros((R, N, T), dtype=torch.float32) for _ in range(2))
        dA = u.new_empty((R, Dim, N), dtype=torch.float32)
        dD, dbias = (u.new_empty((R, Dim), dtype=torch.float32) for _ in range(2))
        _backward[(Dim // (32 // lanes * warps), R)](
            u, delta, A, B, C, D, z, delta_bias, saved, dout, du, ddelta, dz, dB, dC, dA, dD, dbias, T, Dim,
            *u.stride()[:2], *delta.stride()[:2], *B.stride()[:2], *C.stride()[:2], *z.stride()[:2],
            *dout.stride()[:2], N=N, LANES=lanes, STEPS=steps, WARPS=warps, num_warps=warps)
        return (du, ddelta, dA.sum(0), dB.to(B.dtype), dC.to(C.dtype), dD.sum(0), dz, dbias.sum(0),
                None, None, None, None)


def gluon_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True, *, lanes, steps, warps):
    """``selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True)`` through the Gluon scan: u,
    delta, z (R, d_inner, T) and B, C (R, N, T), each contiguous along T, with T a multiple of ``steps``."""
    R, Dim, T = u.shape
    assert delta_softplus and T % steps == 0 and Dim % (32 // lanes * warps) == 0 and A.shape[1] % lanes == 0
    assert all(t.stride(2) == 1 for t in (u, delta, z, B, C))
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    save = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)  # keep states for a backward
    return _Scan.apply(*inputs, save, lanes, steps, warps)


def inputs(R, Dim, T, N, dtype, seed=0):
    """One packed layer's scan inputs as the model lays them out: u and z halves of one projection, B and C slices of
    another (C strided), separators every 97 tokens."""
    g = torch.Generator().manual_seed(seed)
    u, z = torch.randn(R, 2 * Dim, T, generator=g).to("cuda", dtype).split(Dim, 1)
    delta = (torch.randn(R, Dim, T, generator=g) * 0.5 - 1).to("cuda", dtype)
    B, C = torch.randn(R, 48 + 2 * N, T, generator=g).to("cuda", dtype)[:, 48:].split(N, 1)
    marks = (torch.arange(T, device="cuda") % 97 == 96)[None, None]
    delta = torch.where(marks, RESET_STEP, delta)
    B = torch.where(marks, 0.0, B)
    A = -torch.exp(torch.randn(Dim, N, generator=g) * 0.5).cuda()
    return [u, delta, A, B, C, torch.randn(Dim, generator=g).cuda(), z, (torch.randn(Dim, generator=g) * 0.1).cuda()]


def timed(fn, n=20) -> float:
    """Median milliseconds of ``n`` calls, after two."""
    fn(), fn()
    times = []
    for _ in range(n):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(begin.elapsed_time(end))
    return statistics.median(times)


def run(scan, x, grad):
    """(out, *gradients) of ``scan`` on leaf copies of ``x``; gradients only with ``grad``."""
    leaves = [t.detach().clone().requires_grad_(grad) for t in x]
    u, delta, A, B, C, D, z, bias = leaves
    out = scan(u, delta, A, B, C, D=D, z=z, delta_bias=bias, delta_softplus=True)
    if not grad:
        return [out]
    return [out, *torch.autograd.grad(out, leaves, torch.ones_like(out) * 0.01)]


def rel(a, b) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="gpu")
    args = parser.parse_args()
    out = pathlib.Path(__file__).parent / f"seq_scan.{args.name}.json"
    result = {"device": torch.cuda.get_device_name(), "d_inner": 1536, "state": 16, "shapes": {}}
    configs = list(itertools.product((4, 8, 16), (4, 8), (1, 2, 4)))
    shapes = [(7, 1024, torch.float32), (7, 1024, torch.bfloat16), (13, 1024, torch.bfloat16),
              (14, 512, torch.bfloat16)]
    for R, T, dtype in shapes:
        x = inputs(R, 1536, T, 16, dtype)
        reference = run(selective_scan_fn, [t.float() if t.is_floating_point() else t for t in x], True)
        theirs = run(selective_scan_fn, x, True)
        row = {"mamba_ssm": {"forward_ms": timed(lambda: run(selective_scan_fn, x, False)),
                             "train_ms": timed(lambda: run(selective_scan_fn, x, True)),
                             "vs_fp32": {k: rel(a, b) for k, a, b in zip(NAMES, theirs, reference)}}, "ours": []}
        for lanes, steps, warps in configs:
            def scan(*a, **k):
                return gluon_scan(*a, **k, lanes=lanes, steps=steps, warps=warps)
            ours = run(scan, x, True)
            row["ours"].append({"lanes": lanes, "steps": steps, "warps": warps,
                                "forward_ms": timed(lambda: run(scan, x, False)),
                                "train_ms": timed(lambda: run(scan, x, True)),
                                "vs_mamba_ssm": {k: rel(a, b) for k, a, b in zip(NAMES, ours, theirs)},
                                "vs_fp32": {k: rel(a, b) for k, a, b in zip(NAMES, ours, reference)}})
            print(R, T, dtype, json.dumps(row["ours"][-1]), flush=True)
        for key in ("forward_ms", "train_ms"):
            best = min(row["ours"], key=lambda o: o[key])
            row[f"best_{key}"] = {"config": [best["lanes"], best["steps"], best["warps"]], "ms": best[key],
                                  "speedup_vs_mamba_ssm": row["mamba_ssm"][key] / best[key]}
        label = f"{R}x{T} {str(dtype).split('.')[-1]}"
        result["shapes"][label] = row
        print(label, json.dumps({k: v for k, v in row.items() if k != "ours"}), flush=True)
        out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
