"""Mamba-1 on CPU: transformers' reference selective scan vs ours (``mamba_pyserini.ops.selective_scan``), forward and
forward+backward of a training-sized batch, measured in one run. Writes one JSON file.

    python experiments/cpu-scans/cpu_scan.py --out experiments/cpu-scans/cpu_scan.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import torch
import transformers.models.mamba.modeling_mamba as modeling_mamba
from transformers import MambaConfig, MambaModel

from mamba_pyserini._kernels import torch_function
from mamba_pyserini.ops.selective_scan import selective_scan


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


def compare(module, name: str, scans: dict, measure) -> dict:
    """``measure()`` with each of ``scans`` bound as ``module.name`` in turn, and transformers' time over ours."""
    original, results = getattr(module, name), {}
    for label, fn in scans.items():
        setattr(module, name, fn)
        try:
            results[label] = measure()
        finally:
            setattr(module, name, original)
    return {"results": results, **{f"ratio_{k.removesuffix('_s')}": results["transformers"][k] / results["ours"][k]
                                   for k in results["ours"]}}


def write(path: str, report: dict) -> None:
    report = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, **report}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


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
    transformers_scan = torch_function(modeling_mamba.mamba_selective_scan, modeling_mamba.__name__)
    scans = {"transformers": transformers_scan, "ours": selective_scan}
    measured = compare(modeling_mamba, "mamba_selective_scan", scans, lambda: {
        "forward_s": timed(model, ids, False, a.repeats), "forward_backward_s": timed(model, ids, True, a.repeats)})
    write(a.out, {"model": "Mamba-1, 4 layers, d 256, state 16 (random init)", "batch": a.batch, "length": a.length,
                  **measured})


if __name__ == "__main__":
    main()
