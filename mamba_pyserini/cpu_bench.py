"""``python -m mamba_pyserini.cpu_bench``: how fast the bundled models score query-passage pairs on this CPU, beside
the same-size transformer they were distilled from, in one run; written as JSON + Markdown.

The workload is a fixed sample of the bundled DL19 BM25 top-100 pairs, scored as ``search`` scores them
(tokenization included, length-sorted batches), after an untimed pass over a few batches; each row is the median of
``--repeats`` timed passes. Rows, in fp32 and (where the CPU has native bf16) under bf16 autocast:

- the bundled BiMamba-2 cross-encoder and bi-encoder, with the compiled CPU mixer (``ops/bimamba_cpu.py``) and with
  the chunk scan it replaces (``MAMBA_PYSERINI_CPU_MIXER=0``);
- all-MiniLM-L6-v2 (a 6 x 384 BERT, 22.7M parameters) through the same code path: as a cross-encoder with the
  bundled one's pair pooling, and as a bi-encoder;
- the same model as sentence-transformers users run it: ``CrossEncoder.predict`` (a fresh one-logit head: only the
  speed counts) and ``SentenceTransformer.encode`` of the queries and passages."""
from __future__ import annotations

import datetime
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path
from unittest.mock import patch

import click

from ._cli import handle_errors, info

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
# set to run as on an AVX2-only CPU: PyTorch's, MKL's, oneDNN's and numba's instruction sets
ISA_LIMITS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "NUMBA_CPU_NAME")


def cpu() -> dict:
    """The CPU's model name, the flags that decide the fast paths, the threads PyTorch uses, and any limit set on the
    instruction sets (:data:`ISA_LIMITS`; under ``ATEN_CPU_CAPABILITY=avx2`` bf16 counts as not native)."""
    import torch

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    lines = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    names = {k.strip(): v.strip() for k, v in lines.items()}
    flags = set(names.get("flags", "").split())
    limits = {k: os.environ[k] for k in ISA_LIMITS if k in os.environ}
    native_bf16 = bool(flags & {"avx512_bf16", "amx_bf16"}) and limits.get("ATEN_CPU_CAPABILITY") in (None, "avx512")
    return {"model": names.get("model name") or platform.processor() or platform.machine(),
            "flags": {f: f in flags for f in FLAGS}, "isa_limits": limits, "threads": torch.get_num_threads(),
            "native_bf16": native_bf16}


def sample_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` (query, passage) pairs drawn from the bundled DL19 BM25 top-100 (all 4,300 when ``n`` is larger)."""
    from .bench import dl19_pairs

    pairs = dl19_pairs()
    return random.Random(seed).sample(pairs, min(n, len(pairs)))


def scorers(batch_size: int) -> dict[str, tuple[str, object]]:
    """name -> (kind, score(pairs)) for every row; models load once, here."""
    import numpy as np
    from sentence_transformers import CrossEncoder, SentenceTransformer

    from ._kernels import CPU_MIXER_ENV
    from .modeling.auto import load_model
    from .modeling.backbone import resolve_checkpoint
    from .modeling.cross_encoder import MambaCrossEncoder

    cross, bi = load_model("default", kind="cross-encoder"), load_model("default", kind="bi-encoder")
    minilm_cross = MambaCrossEncoder.from_backbone_of(MINILM, pooling="pair", max_length=cross.config.max_length)
    minilm_bi = load_model(MINILM, kind="bi-encoder")
    st_cross = CrossEncoder(resolve_checkpoint(MINILM), num_labels=1, device="cpu")
    st_bi = SentenceTransformer(resolve_checkpoint(MINILM), device="cpu")

    def ours(model, compiled):
        def score(pairs):
            with patch.dict(os.environ, {CPU_MIXER_ENV: "1" if compiled else "0"}):
                return model.predict(pairs, batch_size=batch_size, device="cpu")
        return score

    def st_bi_score(pairs):
        queries = sorted({q for q, _ in pairs})
        q = dict(zip(queries, st_bi.encode(queries, batch_size=batch_size, normalize_embeddings=True)))
        d = st_bi.encode([p for _, p in pairs], batch_size=batch_size, normalize_embeddings=True)
        return np.einsum("ij,ij->i", np.stack([q[x] for x, _ in pairs]), d)

    return {
        "BiMamba-2 cross-encoder (bundled), compiled CPU mixer": ("cross-encoder", ours(cross, True)),
        "BiMamba-2 cross-encoder (bundled), chunk scan": ("cross-encoder", ours(cross, False)),
        "all-MiniLM-L6-v2 as a cross-encoder, same code path": ("cross-encoder", ours(minilm_cross, True)),
        "all-MiniLM-L6-v2, sentence-transformers CrossEncoder": (
            "cross-encoder", lambda pairs: st_cross.predict(pairs, batch_size=batch_size)),
        "BiMamba-2 bi-encoder (bundled), compiled CPU mixer": ("bi-encoder", ours(bi, True)),
        "BiMamba-2 bi-encoder (bundled), chunk scan": ("bi-encoder", ours(bi, False)),
        "all-MiniLM-L6-v2 bi-encoder, same code path": ("bi-encoder", ours(minilm_bi, True)),
        "all-MiniLM-L6-v2, sentence-transformers encode": ("bi-encoder", st_bi_score),
    }


def run_cpu_bench(n_pairs: int, repeats: int, batch_size: int) -> dict:
    import torch

    from ._kernels import FP32_ENV, _version

    machine = cpu()
    pairs = sample_pairs(n_pairs)
    precisions = ["fp32"] + (["bf16"] if machine["native_bf16"] else [])
    rows = []
    for name, (kind, score) in scorers(batch_size).items():
        for precision in precisions:
            bf16 = precision == "bf16"
            autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)  # for sentence-transformers
            with patch.dict(os.environ, {FP32_ENV: "0" if bf16 else "1"}), autocast, torch.inference_mode():
                score(pairs[:4 * batch_size])  # untimed: first calls, numba's cache, allocator
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    score(pairs)
                    times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            rows.append({"model": name, "kind": kind, "precision": precision, "seconds": seconds,
                         "pairs_per_s": len(pairs) / seconds})
            info(f"{name} [{precision}]: {len(pairs) / seconds:.1f} pairs/s")
    return {"date": datetime.date.today().isoformat(), "cpu": machine, "pairs": len(pairs), "repeats": repeats,
            "batch_size": batch_size, "versions": {p: _version(p) for p in (
                "torch", "transformers", "sentence_transformers", "numba")},
            "rows": rows, "ratios": ratios(rows)}


def ratios(rows: list[dict]) -> dict:
    """Per kind and precision: the bundled model's speed (compiled mixer) over each other row's."""
    out = {}
    for row in rows:
        if "bundled" in row["model"] and "compiled" in row["model"]:
            key = f"{row['kind']} {row['precision']}"
            out[key] = {other["model"]: row["pairs_per_s"] / other["pairs_per_s"] for other in rows
                        if other["kind"] == row["kind"] and other["precision"] == row["precision"]
                        and other is not row}
    return out


def markdown(report: dict) -> str:
    machine = report["cpu"]
    flags = ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in machine["flags"].items())
    limits = f", limited to {machine['isa_limits']}" if machine["isa_limits"] else ""
    lines = [f"# CPU scoring speed, {report['date']}", "",
             f"{machine['model']} ({flags}{limits}), {machine['threads']} threads; {report['pairs']} DL19 pairs, "
             f"batches of {report['batch_size']}, median of {report['repeats']}; {report['versions']}", "",
             "| model | precision | pairs/s | bundled model's ratio |", "|---|---|---|---|"]
    for row in report["rows"]:
        ratio = next((v[row["model"]] for k, v in report["ratios"].items()
                      if k == f"{row['kind']} {row['precision']}" and row["model"] in v), None)
        lines.append(f"| {row['model']} | {row['precision']} | {row['pairs_per_s']:.1f} | "
                     f"{'' if ratio is None else f'{ratio:.2f}x'} |")
    return "\n".join(lines) + "\n"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", default="benchmarks/results", show_default=True, help="Directory for NAME.{json,md}.")
@click.option("--name", default="cpu_bench", show_default=True, help="File stem of the results.")
@click.option("--pairs", "n_pairs", default=860, show_default=True, type=click.IntRange(1),
              help="DL19 pairs scored per pass (a fixed sample).")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1), help="Timed passes per row.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1), help="As search's default.")
@handle_errors
def main(out, name, n_pairs, repeats, batch_size):
    """Measure how fast the bundled models and a same-size transformer score pairs on this CPU."""
    from ._io import atomic_write, check_writable

    out = Path(out)
    check_writable(out / f"{name}.json")
    report = run_cpu_bench(n_pairs, repeats, batch_size)
    with atomic_write(out / f"{name}.json") as f:
        json.dump(report, f, indent=2)
    with atomic_write(out / f"{name}.md") as f:
        f.write(markdown(report))
    info(f"results written to {out}/{name}.json, .md")


if __name__ == "__main__":
    main()
