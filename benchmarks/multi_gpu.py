"""Multi-GPU check (one host, NCCL): the toolkit's own `train` and `encode` commands on 1 GPU and under
`torchrun --nproc_per_node N`, compared for throughput and agreement. Writes benchmarks/results/multi_gpu.json.

    python benchmarks/multi_gpu.py --gpus 2 [--steps 40] [--passages 108680]

Training: a random-init Mamba-1 130M cross-encoder (24 x 768, state 16, GPT-NeoX tokenizer) on groups of 8 pool
passages per MS MARCO training query (random pseudo-labels: only the loss curves' agreement matters), the same global
batch (16 queries x 8) on 1 GPU and on N. Encoding: a random-init bi-encoder of the same shape over the bundled
MS MARCO v2 pool repeated to at least 100k passages, sharded then merged, against the single-GPU index."""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0"}


def run(cmd: list[str], env: dict) -> float:
    began = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=REPO)
    return time.perf_counter() - began


def save(report: dict, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2) + "\n")


def main():
    import numpy as np
    import torch
    from transformers import AutoTokenizer, MambaConfig

    from mamba_pyserini.corpus import read_collection
    from mamba_pyserini.dense import read_faiss_index
    from mamba_pyserini.modeling.bi_encoder import MambaBiEncoder
    from mamba_pyserini.modeling.cross_encoder import MambaCrossEncoder

    parser = argparse.ArgumentParser()
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--work", default="/tmp/multi_gpu")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "multi_gpu.json"))
    a = parser.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **MULTICAST_OFF, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(a.gpus)]
    tokenizer = AutoTokenizer.from_pretrained(REPO / "tests" / "fixtures" / "gpt-neox-20b-tokenizer")
    config = MambaConfig(vocab_size=len(tokenizer), hidden_size=a.width, num_hidden_layers=a.layers,
                         state_size=16)
    torch.manual_seed(0)
    MambaCrossEncoder.from_backbone_config(config, tokenizer, max_length=512).save_pretrained(work / "ce")
    torch.manual_seed(0)
    MambaBiEncoder.from_backbone_config(config, tokenizer, max_length=256).save_pretrained(work / "bi")

    passages = list(read_collection(REPO / "collections" / "distill" / "msmarco-v2-passage.pool.jsonl.gz").values())
    queries = list(read_collection(REPO / "collections" / "msmarco-train" /
                                   "msmarco-passage.train.sample10k-1.tsv.gz").values())
    rng = random.Random(0)
    with open(work / "groups.jsonl", "w") as f:
        for q in queries[:2000]:
            picks = rng.sample(passages, 8)
            f.write(json.dumps({"query": q, "pos": picks[:1], "neg": picks[1:]}) + "\n")
    train = ["-m", "mamba_pyserini.train", "cross-encoder", "--model", str(work / "ce"), "--data",
             str(work / "groups.jsonl"), "--max-steps", str(a.steps), "--warmup-steps", "10", "--lr", "1e-4",
             "--log-steps", "1", "--save-steps", "100000"]
    report = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "gpus": a.gpus,
              "torch": torch.__version__,
              "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"), "env": MULTICAST_OFF}
    logs = {}
    for name, prefix, per_process in (("1gpu", [sys.executable], 8 * a.gpus), (f"{a.gpus}gpu", torchrun, 8)):
        out = work / f"train-{name}"
        wall = run([*prefix, *train, "--queries-per-step", str(per_process), "--output", str(out)], env)
        logs[name] = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
        steady = logs[name][5:]  # past warm-up of kernels and allocator
        report[f"train_{name}"] = {"wall_s": round(wall, 1), "queries_per_process_step": per_process,
                                   "seq_per_s": round(statistics.median(x["seqs_per_s"] for x in steady), 1),
                                   "tokens_per_s": round(statistics.median(x["tokens_per_s"] for x in steady))}
    save(report, a.out)
    one, many = (np.array([x["loss"] for x in logs[k]]) for k in ("1gpu", f"{a.gpus}gpu"))
    report["train_scaling_efficiency"] = round(report[f"train_{a.gpus}gpu"]["seq_per_s"]
                                               / (a.gpus * report["train_1gpu"]["seq_per_s"]), 3)
    report["train_loss"] = {"1gpu": one.round(5).tolist(), f"{a.gpus}gpu": many.round(5).tolist(),
                            "max_abs_gap": round(float(np.abs(one - many).max()), 5),
                            "mean_rel_gap": round(float((np.abs(one - many) / np.abs(one)).mean()), 5)}

    copies = -(-a.passages // len(passages))
    with open(work / "corpus.jsonl", "w") as f:
        for c in range(copies):
            for i, text in enumerate(passages):
                f.write(json.dumps({"id": f"p{c}-{i}", "contents": text}) + "\n")
    encode = ["-m", "mamba_pyserini.encode", "--model", str(work / "bi"), "--corpus", str(work / "corpus.jsonl"),
              "--batch-size", "256", "--overwrite"]
    walls = {"1gpu": run([sys.executable, *encode, "--output", str(work / "index-1gpu")], env),
             f"{a.gpus}gpu": run([*torchrun, *encode, "--output", str(work / f"index-{a.gpus}gpu")], env)}
    (i1, d1), (i2, d2) = read_faiss_index(work / "index-1gpu"), read_faiss_index(work / f"index-{a.gpus}gpu")
    v1, v2 = i1.reconstruct_n(0, i1.ntotal), i2.reconstruct_n(0, i2.ntotal)
    report["encode"] = {"passages": len(d1), "wall_s": {k: round(v, 1) for k, v in walls.items()},
                        "speedup": round(walls["1gpu"] / walls[f"{a.gpus}gpu"], 2), "same_docids": d1 == d2,
                        "max_abs_vector_diff": float(np.abs(v1 - v2).max()),
                        "max_vector_abs": float(np.abs(v1).max())}
    save(report, a.out)
    print(json.dumps({k: v for k, v in report.items() if k != "train_loss"}, indent=2))
    print("loss gap", report["train_loss"]["max_abs_gap"], report["train_loss"]["mean_rel_gap"])


if __name__ == "__main__":
    main()
