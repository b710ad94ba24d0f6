"""mamba_ssm selective-scan forward/backward time against the number of B/C groups (expanded, stride 0) and row
shapes: does the contention of the backward's dB/dC atomics cost?
``python experiments/mamba1-scan-kernels/scan_groups.py OUT.json`` (GPU)."""
import json
import sys

import torch
from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

torch.manual_seed(0)
out = {}
for R, T in [(7, 1024), (4, 2048), (1, 8192)]:
    d, n = 1536, 16
    u = torch.randn(R, d, T, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dt = (torch.randn(R, d, T, device="cuda") * 0.5 - 3).to(torch.bfloat16).requires_grad_()
    z = torch.randn(R, d, T, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    A = -torch.rand(d, n, device="cuda").add(0.5).requires_grad_()
    B0 = torch.randn(R, n, T, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    C0 = torch.randn(R, n, T, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    D = torch.ones(d, device="cuda", requires_grad=True)
    bias = torch.zeros(d, device="cuda", requires_grad=True)
    g = torch.randn(R, d, T, device="cuda", dtype=torch.bfloat16)
    ref = None
    for G in (1, 2, 4, 8, 16, 32, 64):
        def run():
            B = B0[:, None].expand(R, G, n, T)
            C = C0[:, None].expand(R, G, n, T)
            y = selective_scan_fn(u, dt, A, B, C, D=D, z=z, delta_bias=bias, delta_softplus=True)
            return y
        for _ in range(3):
            y = run()
            torch.autograd.grad(y, (u, dt, A, B0, C0, D), g)
        torch.cuda.synchronize()
        e = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
        f_ms = b_ms = 0
        for _ in range(10):
            e[0].record()
            y = run()
            e[1].record()
            grads = torch.autograd.grad(y, (u, dt, A, B0, C0, D), g)
            e[2].record()
            torch.cuda.synchronize()
            f_ms += e[0].elapsed_time(e[1]) / 10
            b_ms += e[1].elapsed_time(e[2]) / 10
        if ref is None:
            ref = grads
        diff = {k: float((a.float() - b.float()).abs().max() / b.float().abs().max())
                for k, a, b in zip("u dt A B C D".split(), grads, ref)}
        out[f"R{R}xT{T}-G{G}"] = {"fwd_ms": f_ms, "bwd_ms": b_ms, "grad_rel_diff_vs_G1": diff}
        print(R, T, G, f"fwd {f_ms:.3f} ms bwd {b_ms:.3f} ms", {k: f"{v:.1e}" for k, v in diff.items()}, flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
