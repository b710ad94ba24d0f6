"""Train a Mamba-1 130M-shaped cross-encoder (random init) with the toolkit's Trainer on the fixture groups, on one
GPU: throughput, peak memory, and an interrupted + resumed run against an uninterrupted one, beside a second
uninterrupted run (mamba_ssm's backward kernels are not bit-deterministic, so that is the noise floor); optionally
LoRA.
Writes one JSON file. Run it with and without mamba_ssm installed to compare kernel paths.

    python benchmarks/train_gpu.py --out benchmarks/results/train_gpu.fast.json --steps 40
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import tempfile
from pathlib import Path

import torch
from transformers import AutoTokenizer, MambaConfig

from mamba_pyserini import MambaCrossEncoder, kernel_info
from mamba_pyserini.training.data import read_groups
from mamba_pyserini.training.trainer import Trainer, TrainingArguments

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER = ROOT / "tests" / "fixtures" / "gpt-neox-20b-tokenizer"
GROUPS = ROOT / "tests" / "fixtures" / "train" / "flag-reranker.jsonl"


def run(tokenizer, output: Path, steps: int, stop_after=None, resume=False, **kw) -> list[dict]:
    torch.manual_seed(0)
    config = MambaConfig(vocab_size=len(tokenizer), hidden_size=768, num_hidden_layers=24, state_size=16)
    model = MambaCrossEncoder.from_backbone_config(config, tokenizer)
    args = TrainingArguments(str(output), learning_rate=1e-4, warmup_steps=5, max_steps=steps, log_steps=1,
                             save_steps=10_000, show_progress_bar=False, **kw)
    return Trainer(model, read_groups(GROUPS), args).train(resume=resume, stop_after=stop_after)


def summary(history: list[dict], skip: int = 3) -> dict:
    steady = history[skip:] or history
    return {"steps": len(history), "first_loss": history[0]["loss"], "last_loss": history[-1]["loss"],
            "seqs_per_s": statistics.median(e["seqs_per_s"] for e in steady),
            "tokens_per_s": statistics.median(e["tokens_per_s"] for e in steady)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lora", action="store_true")
    a = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    report = {"date": datetime.date.today().isoformat(), "device": torch.cuda.get_device_name(0),
              "kernels": kernel_info(), "workload": "8 queries x (1 positive + 7 negatives) per step, MS MARCO text "
                                                    "(tests/fixtures/train/flag-reranker.jsonl), max length 512, bf16"}
    with tempfile.TemporaryDirectory() as tmp:
        torch.cuda.reset_peak_memory_stats()
        whole = run(tokenizer, Path(tmp) / "whole", a.steps)
        report["full"] = {**summary(whole), "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
        again = run(tokenizer, Path(tmp) / "again", a.steps)
        half = a.steps // 2
        split = run(tokenizer, Path(tmp) / "split", a.steps, stop_after=half)
        split += run(tokenizer, Path(tmp) / "split", a.steps, resume=True)

        def gap(runs):  # mean relative loss difference over the second half of training
            pairs = list(zip(*runs))[half:]
            return statistics.mean(abs(x["loss"] - y["loss"]) / max(abs(y["loss"]), 1e-6) for x, y in pairs)

        report["resume"] = {"stopped_at": half, "steps": len(split),
                            "first_divergent_step_of_two_uninterrupted_runs": next(
                                (x["step"] for x, y in zip(whole, again) if x["loss"] != y["loss"]), None),
                            "mean_relative_gap_uninterrupted_vs_uninterrupted": gap((again, whole)),
                            "mean_relative_gap_resumed_vs_uninterrupted": gap((split, whole)),
                            "losses": {"whole": [e["loss"] for e in whole], "again": [e["loss"] for e in again],
                                       "resumed": [e["loss"] for e in split]}}
        if a.lora:
            torch.cuda.reset_peak_memory_stats()
            lora = run(tokenizer, Path(tmp) / "lora", a.steps, lora=True)
            report["lora"] = {**summary(lora), "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "resume"}, indent=2))
    print(json.dumps({k: v for k, v in report["resume"].items() if k != "losses"}, indent=2))


if __name__ == "__main__":
    main()
