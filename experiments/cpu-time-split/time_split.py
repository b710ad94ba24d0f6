"""Where the bundled bi-encoder's CPU time goes in fp32, beside all-MiniLM-L6-v2 on the same code path: one encode
pass over the passages of the CPU bench's DL19 sample (length-sorted batches of 16), profiled by operator
(torch.profiler) with the compiled BiMamba-2 mixer timed around its calls; and the fp32 matrix products at the
layers' shapes for 700 to 5,632 rows (tokens), in multiply-adds per second. Writes one JSON file.

    python experiments/cpu-time-split/time_split.py experiments/cpu-time-split/time_split.json
"""
from __future__ import annotations

import json
import os
import sys
import time

os.environ["MAMBA_PYSERINI_FP32"] = "1"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.profiler import profile  # noqa: E402

from mamba_pyserini.cpu_bench import MINILM, cpu, sample_pairs  # noqa: E402
from mamba_pyserini.modeling.auto import load_model  # noqa: E402
from mamba_pyserini.ops import bimamba_cpu  # noqa: E402


def split(model, docs: list[str]) -> dict:
    """Seconds of one encode pass: wall, each of the top operators, and the compiled mixer's calls."""
    mixer, spent = bimamba_cpu.bidirectional_mix, [0.0]

    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = mixer(*args, **kwargs)
        spent[0] += time.perf_counter() - start
        return out

    bimamba_cpu.bidirectional_mix = timed
    try:
        model.encode(docs[:64], batch_size=16)  # untimed: numba's cache, the allocator
        spent[0] = 0.0
        with profile() as prof:
            start = time.perf_counter()
            model.encode(docs, batch_size=16)
            wall = time.perf_counter() - start
    finally:
        bimamba_cpu.bidirectional_mix = mixer
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]
    return {"wall_s": wall, "compiled_mixer_s": spent[0],
            "operators_s": {e.key: e.self_cpu_time_total / 1e6 for e in ops}}


def matmuls(rows: int) -> dict:
    """Multiply-adds per second of ``rows`` tokens through each projection shape of the two models."""
    out = {}
    for name, (outputs, inputs) in {"BiMamba-2 in-projection": (1536, 384), "MLP in": (1536, 384),
                                    "MLP out": (384, 1536), "384 x 384 (out-projection, BERT's Q, K, V, O)": (384, 384)
                                    }.items():
        x, w, b = torch.randn(rows, inputs), torch.randn(outputs, inputs), torch.randn(outputs)
        times = []
        for _ in range(15):
            start = time.perf_counter()
            F.linear(x, w, b)
            times.append(time.perf_counter() - start)
        out[name] = rows * outputs * inputs / sorted(times)[len(times) // 2] / 1e9
    return out


def main(path: str) -> None:
    pairs = sample_pairs(430)
    docs = sorted({d for _, d in pairs})
    report = {"cpu": cpu(), "torch": torch.__version__, "passages": len(docs), "batch_size": 16,
              "gmac_per_s_by_rows": {rows: matmuls(rows) for rows in (700, 1408, 2816, 5632)}}
    with torch.inference_mode():
        for name, model in {"BiMamba-2 bi-encoder (bundled)": load_model("default", kind="bi-encoder"),
                            "all-MiniLM-L6-v2 bi-encoder": load_model(MINILM, kind="bi-encoder")}.items():
            tokens = [len(f["input_ids"]) for f in model.tokenize(docs, False)]
            report[name] = {"real_tokens": sum(tokens), **split(model, docs)}
            print(name, json.dumps(report[name], indent=1), flush=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1])
