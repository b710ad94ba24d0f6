"""An experiment: Mamba-1's selective-scan forward (inference) as a sequential loop over time in Gluon (Triton's
explicit-layout dialect, Triton >= 3.6), against mamba_ssm's CUDA scan, on packed rows of 1,024 tokens (7 rows: a
training step; 13: a reranking batch), d_inner 1,536, state 16. Agreement and forward time per block configuration,
to ``benchmarks/results/seq_scan.<name>.json``.

The idea: mamba_ssm runs one block scan per state per channel and reloads B and C for every channel. Here each
thread owns one channel with all 16 states in registers and steps through time ``UNROLL`` tokens at a time (16-byte
loads of its channel's inputs, B and C read once per program and broadcast), so no scan, shuffle or barrier is
needed. The H100 run (``seq_scan.h100.json``): 1.2-1.8x faster than mamba_ssm in fp32, but in bf16 (what inference
runs) 0.74x for 7 rows and 1.05x for 13, so the toolkit keeps mamba_ssm's scan.

    python benchmarks/seq_scan.py --name h100"""
import argparse
import json
import pathlib
import statistics

import torch
from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
from triton.experimental import gluon
from triton.experimental.gluon import language as gl


@gluon.jit
def _row(tile, rows, j: gl.constexpr, axis: gl.constexpr):
    """Step j of a tile that each thread holds whole along ``axis`` (a register read once compiled)."""
    return gl.sum(gl.where(rows == j, tile, -0.0), axis)


@gluon.jit
def _scan_forward(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, T,
                  su, sud, sdt, sdtd, sB, sBn, sC, sCn, sz, szd, so, sod,
                  N: gl.constexpr, BLOCK_D: gl.constexpr, UNROLL: gl.constexpr, WARPS: gl.constexpr):
    # layouts: states x channels (N, BD), steps x channels (U, BD), B or C (N, U, BD): one channel per thread
    L: gl.constexpr = gl.BlockedLayout([N, 1], [1, 32], [1, WARPS], [0, 1])
    LT: gl.constexpr = gl.BlockedLayout([UNROLL, 1], [1, 32], [1, WARPS], [0, 1])
    L3: gl.constexpr = gl.BlockedLayout([N, UNROLL, 1], [1, 1, 32], [1, 1, WARPS], [1, 0, 2])
    LD: gl.constexpr = gl.SliceLayout(0, L)
    LTD: gl.constexpr = gl.SliceLayout(0, LT)
    r = gl.program_id(1)
    d = gl.program_id(0) * BLOCK_D + gl.arange(0, BLOCK_D, layout=LD)
    channels = gl.program_id(0) * BLOCK_D + gl.arange(0, BLOCK_D, layout=LTD)
    dt = gl.expand_dims(channels, 0)  # (1, BD)
    rows = gl.expand_dims(gl.arange(0, UNROLL, layout=gl.SliceLayout(1, LT)), 1)  # (U, 1)
    n = gl.arange(0, N, layout=gl.SliceLayout(1, L))
    A = gl.load(A_ptr + gl.expand_dims(d, 0) * N + gl.expand_dims(n, 1)) * 1.4426950408889634  # (N, BD), log2
    bias = gl.expand_dims(gl.load(bias_ptr + channels), 0)
    skip = gl.expand_dims(gl.load(D_ptr + channels), 0)
    n3 = gl.expand_dims(gl.expand_dims(gl.arange(0, N, layout=gl.SliceLayout(1, gl.SliceLayout(2, L3))), 1), 2)
    t3 = gl.expand_dims(gl.expand_dims(gl.arange(0, UNROLL, layout=gl.SliceLayout(0, gl.SliceLayout(2, L3))), 0), 2)
    d3 = gl.expand_dims(gl.expand_dims(gl.arange(0, BLOCK_D, layout=gl.SliceLayout(0, gl.SliceLayout(1, L3))), 0), 1)
    h = gl.zeros([N, BLOCK_D], gl.float32, L)
    for t0 in range(0, T, UNROLL):
        u = gl.load(u_ptr + r * su + dt * sud + rows + t0).to(gl.float32)  # (U, BD)
        x = gl.load(dt_ptr + r * sdt + dt * sdtd + rows + t0).to(gl.float32) + bias
        delta = gl.where(x <= 20.0, gl.log(1.0 + gl.exp(x)), x)  # softplus, as mamba_ssm
        z = gl.load(z_ptr + r * sz + dt * szd + rows + t0).to(gl.float32)
        B = gl.load(B_ptr + r * sB + n3 * sBn + t3 + t0 + d3 * 0).to(gl.float32)  # (N, U, BD), same in every thread
        C = gl.load(C_ptr + r * sC + n3 * sCn + t3 + t0 + d3 * 0).to(gl.float32)
        du = delta * u
        y = gl.zeros([UNROLL, BLOCK_D], gl.float32, LT)
        for j in gl.static_range(UNROLL):
            step_delta = gl.expand_dims(gl.convert_layout(_row(delta, rows, j, 0), LD), 0)
            step_du = gl.expand_dims(gl.convert_layout(_row(du, rows, j, 0), LD), 0)
            h = gl.exp2(step_delta * A) * h + gl.convert_layout(_row(B, t3, j, 1), L) * step_du
            step = gl.convert_layout(gl.sum(h * gl.convert_layout(_row(C, t3, j, 1), L), 0), LTD)
            y = gl.where(rows == j, gl.expand_dims(step, 0), y)
        y = (y + skip * u) * z / (1.0 + gl.exp(-z))
        gl.store(out_ptr + r * so + dt * sod + rows + t0, y.to(out_ptr.dtype.element_ty))


def scan_forward(u, delta, A, B, C, D, z, delta_bias, block_d=64, unroll=8):
    """selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True), forward only: u, delta, z
    (R, d_inner, T), B and C (R, N, T), each contiguous along T, with T a multiple of ``unroll``."""
    R, Dim, T = u.shape
    assert T % unroll == 0 and Dim % block_d == 0 and block_d % 32 == 0
    assert all(t.stride(2) == 1 for t in (u, delta, B, C, z))
    out = torch.empty_like(u)
    _scan_forward[(Dim // block_d, R)](
        u, delta, A.float().contiguous(), B, C, D.float().contiguous(), z, delta_bias.float().contiguous(), out, T,
        *u.stride()[:2], *delta.stride()[:2], *B.stride()[:2], *C.stride()[:2], *z.stride()[:2], *out.stride()[:2],
        N=A.shape[1], BLOCK_D=block_d, UNROLL=unroll, WARPS=block_d // 32, num_warps=block_d // 32)
    return out


def inputs(R, Dim, T, N, dtype, seed=0):
    """One packed layer's scan inputs: z and u halves of one projection, B and C slices of another."""
    g = torch.Generator().manual_seed(seed)
    u, z = torch.randn(R, 2 * Dim, T, generator=g).to("cuda", dtype).split(Dim, 1)
    delta = (torch.randn(R, Dim, T, generator=g) * 0.5 - 1).to("cuda", dtype)
    A = -torch.exp(torch.randn(Dim, N, generator=g) * 0.5).cuda()
    B, C = torch.randn(R, 48 + 2 * N, T, generator=g).to("cuda", dtype)[:, 48:].split(N, 1)
    return u, delta, A, B, C, torch.randn(Dim, generator=g).cuda(), z, (torch.randn(Dim, generator=g) * 0.1).cuda()


def timed(fn, n=30) -> float:
    """Median milliseconds of ``n`` calls, after one."""
    fn()
    times = []
    for _ in range(n):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(begin.elapsed_time(end))
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="gpu")
    args = parser.parse_args()
    out = pathlib.Path(__file__).parent / "results" / f"seq_scan.{args.name}.json"
    result = {"device": torch.cuda.get_device_name(), "d_inner": 1536, "state": 16, "row_length": 1024, "rows": {}}
    for R in (7, 13):
        for dtype in (torch.float32, torch.bfloat16):
            x = inputs(R, 1536, 1024, 16, dtype)
            ref = selective_scan_fn(*x[:7], x[7], delta_softplus=True).float()
            row = {"mamba_ssm_ms": timed(lambda: selective_scan_fn(*x[:7], x[7], delta_softplus=True)), "gluon": []}
            for block_d in (32, 64, 128):
                for unroll in (4, 8):
                    ours = scan_forward(*x, block_d=block_d, unroll=unroll).float()
                    row["gluon"].append({"block_d": block_d, "unroll": unroll,
                                         "ms": timed(lambda: scan_forward(*x, block_d=block_d, unroll=unroll)),
                                         "max_rel_diff": float((ours - ref).abs().max() / ref.abs().max())})
            row["best_ratio_vs_mamba_ssm"] = row["mamba_ssm_ms"] / min(g["ms"] for g in row["gluon"])
            label = f"{R}x1024 {str(dtype).split('.')[-1]}"
            result["rows"][label] = row
            print(label, json.dumps(row), flush=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
