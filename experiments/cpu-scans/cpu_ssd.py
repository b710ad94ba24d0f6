"""Mamba-2 on CPU: transformers' reference chunk scan vs ours (``mamba_pyserini.ops.ssd``) inside the distilled
students' shape (6 layers, d 384, state 64, chunks of 32), reranking-sized forward and training-sized
forward+backward, measured in one run. Writes one JSON file.

    python experiments/cpu-scans/cpu_ssd.py --out experiments/cpu-scans/cpu_ssd.json
"""
from __future__ import annotations

import argparse

import torch
import transformers.models.mamba2.modeling_mamba2 as modeling_mamba2
from cpu_scan import compare, timed, write
from transformers import Mamba2Config, Mamba2Model

from mamba_pyserini._kernels import torch_function
from mamba_pyserini.ops.ssd import chunk_scan


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    a = parser.parse_args()
    torch.manual_seed(0)
    config = Mamba2Config(vocab_size=30522, hidden_size=384, num_hidden_layers=6, state_size=64, expand=2,
                          head_dim=64, num_heads=12, n_groups=1, chunk_size=32)
    model = Mamba2Model(config)
    ids = torch.randint(1000, 20000, (a.batch, a.length))
    transformers_scan = torch_function(modeling_mamba2.mamba2_chunk_scan, modeling_mamba2.__name__)
    scans = {"transformers": transformers_scan, "ours": chunk_scan}
    measured = compare(modeling_mamba2, "mamba2_chunk_scan", scans, lambda: {
        "forward_s": timed(model.eval(), ids, False, a.repeats),
        "forward_backward_s": timed(model.train(), ids[:8], True, a.repeats)})
    write(a.out, {"model": "Mamba-2, 6 layers, d 384, state 64, 12 heads of 64, chunk 32 (random init)",
                  "forward_batch": a.batch, "forward_backward_batch": 8, "length": a.length, **measured,
                  "forward_sequences_per_s": {k: a.batch / v["forward_s"] for k, v in measured["results"].items()}})


if __name__ == "__main__":
    main()
