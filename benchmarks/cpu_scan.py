"""Mamba-1 on CPU: transformers' reference selective scan vs ours (``mamba_pyserini.modeling.scan``), forward and
forward+backward of a training-sized batch, measured in one run. Writes one JSON file.

    python benchmarks/cpu_scan.py --out benchmarks/results/cpu_scan.json
"""
from __future__ import annotations

import argparse
import datetime
import inspect
import json
import platform
import time
from pathlib import Path

import torch
import transformers.models.mamba.modeling_mamba as modeling_mamba
from transformers import MambaConfig, MambaModel

from mamba_pyserini.modeling.scan import selective_scan


def timed(model, ids, backward: bool, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        with torch.set_grad_enabled(backward):
            out = model(ids).last_hidden_state
            if backward:
                out.float().square().mean().backward()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    a = parser.parse_args()
    torch.manual_seed(0)
    config = MambaConfig(vocab_size=1000, hidden_size=256, num_hidden_layers=4, state_size=16)
    model = MambaModel(config).train()
    ids = torch.randint(0, 1000, (a.batch, a.length))
    scans = {"transformers": inspect.unwrap(modeling_mamba.mamba_selective_scan), "ours": selective_scan}
    original = modeling_mamba.mamba_selective_scan
    results = {}
    for name, fn in scans.items():
        modeling_mamba.mamba_selective_scan = fn
        try:
            results[name] = {"forward_s": timed(model, ids, False, a.repeats),
                             "forward_backward_s": timed(model, ids, True, a.repeats)}
        finally:
            modeling_mamba.mamba_selective_scan = original
    report = {
        "date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "model": "Mamba-1, 4 layers, d 256, state 16 (random init)", "batch": a.batch, "length": a.length,
        "results": results,
        "ratio_forward_backward": results["transformers"]["forward_backward_s"] / results["ours"]["forward_backward_s"],
        "ratio_forward": results["transformers"]["forward_s"] / results["ours"]["forward_s"],
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
