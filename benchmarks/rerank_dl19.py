"""Rerank the bundled DL19 BM25 top-100 (4,300 pairs, tokenization included) with a 130M-shaped cross-encoder
(random init) and check fast-vs-reference score parity on a tiny model. Writes one JSON file.

    python benchmarks/rerank_dl19.py --out benchmarks/results/rerank_dl19.json [--families mamba mamba2]

Run it twice on a GPU machine, without and with mamba_ssm installed, to compare kernel paths in one session.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, Mamba2Config, MambaConfig

from mamba_pyserini import MambaCrossEncoder, kernel_info
from mamba_pyserini._paths import TOPICS_DIR
from mamba_pyserini.candidates import bundled_candidates

TOKENIZER = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "gpt-neox-20b-tokenizer"


def backbone_config(family: str, vocab_size: int, small: bool):
    width, layers = (64, 2) if small else (768, 24)
    if family == "mamba":
        return MambaConfig(vocab_size=vocab_size, hidden_size=width, num_hidden_layers=layers, state_size=16)
    return Mamba2Config(vocab_size=vocab_size, hidden_size=width, num_hidden_layers=layers, state_size=128,
                        head_dim=64 if not small else 16, num_heads=2 * width // (64 if not small else 16),
                        n_groups=1, expand=2)


def dl19_pairs() -> list[tuple[str, str]]:
    queries = dict(line.rstrip("\n").split("\t", 1) for line in open(TOPICS_DIR / "topics.dl19-passage.txt"))
    run, texts = bundled_candidates("dl19-passage")
    return [(queries[qid], texts[h.docid]) for qid, hits in run.items() for h in hits]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--families", nargs="+", default=["mamba", "mamba2"])
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    pairs = dl19_pairs() if device == "cuda" else dl19_pairs()[:200]
    result = {"date": datetime.date.today().isoformat(), "device": torch.cuda.get_device_name() if device == "cuda"
              else platform.processor(), "kernels": kernel_info(), "pairs": len(pairs), "rows": []}
    for family in args.families:
        torch.manual_seed(0)
        tiny = MambaCrossEncoder.from_backbone_config(backbone_config(family, len(tokenizer), True), tokenizer)
        sample = pairs[:64]
        cpu_scores = tiny.predict(sample, device="cpu")
        dev_scores = tiny.predict(sample, device=device)  # bf16 autocast on GPU
        torch.manual_seed(0)
        model = MambaCrossEncoder.from_backbone_config(backbone_config(family, len(tokenizer), False), tokenizer)
        row = {"family": family, "params": sum(p.numel() for p in model.parameters()),
               "tiny_max_abs_diff_vs_cpu_fp32": float(abs(cpu_scores - dev_scores).max())}
        try:
            model.predict(pairs[:args.batch_size], batch_size=args.batch_size, device=device)  # warm-up
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            model.predict(pairs, batch_size=args.batch_size, device=device)
            if device == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            row.update(seconds=round(seconds, 3), pairs_per_s=round(len(pairs) / seconds, 1),
                       peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None)
        except torch.OutOfMemoryError as e:
            row["error"] = "out of memory: " + str(e).split(".")[0]
        result["rows"].append(row)
        print(json.dumps(result["rows"][-1]), flush=True)
        del model
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
