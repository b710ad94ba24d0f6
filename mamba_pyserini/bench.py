"""``python -m mamba_pyserini.bench``: training and reranking throughput of Mamba rerankers and same-size transformers
on real text, one run per machine, written as JSON + Markdown (+ a PNG chart when matplotlib is there).

Workloads (each model tokenizes with its own tokenizer and template, max length 512, random weights):
- ``train``: steps of 8 MS MARCO training queries x (1 + 7) passages, forward + backward of the group softmax loss +
  fused AdamW, bf16 autocast on GPU; batched ``padded`` (one batch padded to a multiple of 8), ``rounded`` (padded to
  a multiple of 128: at most four shapes, so autotuning and cuBLAS heuristics run once per shape) or ``bucketed``
  (length-sorted micro-batches of at most ``--bucket-tokens`` padded tokens, one loss over all of them); and, where
  the model can pack (``modeling/packing.py``), ``packed`` (rows as ``packing.layout`` says; the Mamba models replay
  CUDA graphs) and, for them, ``packed-eager`` (the same without CUDA graphs). Every configuration is timed after an
  untimed pass over the same steps.
- ``rerank``: the bundled DL19 BM25 top-100 (4,300 pairs) through ``MambaCrossEncoder.predict``, tokenization included
  (overlapped with the model, as in ``search``).
- ``sweep``: training steps of 32k tokens in sequences of one uniform length, 128 to 2,048 tokens.
Reports real (non-pad) tokens/s, sequences/s, peak memory and model FLOPs utilisation (6 x params x tokens for
training, 2 x for inference, over the GPU's dense bf16 peak)."""
from __future__ import annotations

import contextlib
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
from ._paths import COLLECTIONS

QUERIES = COLLECTIONS / "msmarco-train" / "msmarco-passage.train.sample10k-1.tsv.gz"
TOKENIZERS = {"neox": "gpt-neox-20b-tokenizer", "bert": "bert-base-uncased-tokenizer"}
FIXTURES = COLLECTIONS.parent / "tests" / "fixtures"
PEAK_BF16 = {"H100": 989e12, "H200": 989e12}  # dense bf16 FLOP/s
SWEEP = (128, 256, 512, 1024, 2048)
SWEEP_TOKENS = 32768  # per step
WORKLOADS = ("train", "rerank", "sweep")
OURS = ("mamba1-130m", "mamba2-130m")  # the toolkit's Mamba rerankers: the summary's headline is the faster trainer
PAPER_STACK = ("mamba1-130m", "padded")  # transformers ``MambaModel``, padded: the RankMamba paper's stack


def model_configs(small: bool) -> dict[str, tuple[str, object]]:
    """name -> (tokenizer, transformers config): published shapes, or 2-layer width-64 ones with ``small``."""
    from transformers import BertConfig, GPTNeoXConfig, Mamba2Config, MambaConfig

    d, layers, heads = (64, 2, 2) if small else (768, 24, 12)
    half = max(layers // 2, 1)
    # Mamba initialised as mamba_ssm does (std 0.02, out-projections scaled by depth). With transformers' default
    # initializer_range of 0.1 the random 24-layer models are chaotic (experiments/init-sensitivity: bf16 moves
    # Mamba-1's scores by 0.97 of the largest), so no packed-vs-padded check can pass. Speed does not depend on weights.
    mamba_init = {"initializer_range": 0.02, "rescale_prenorm_residual": True}
    return {
        "mamba1-130m": ("neox", MambaConfig(vocab_size=50280, hidden_size=d, num_hidden_layers=layers, state_size=16,
                                            **mamba_init)),
        "mamba2-130m": ("neox", Mamba2Config(vocab_size=50280, hidden_size=d, num_hidden_layers=layers,
                                             state_size=128 if not small else 16, head_dim=64 if not small else 16,
                                             num_heads=2 * d // (64 if not small else 16), n_groups=1, expand=2,
                                             **mamba_init)),
        "pythia-160m": ("neox", GPTNeoXConfig(vocab_size=50304, hidden_size=d, num_hidden_layers=half,
                                              num_attention_heads=heads, intermediate_size=4 * d,
                                              max_position_embeddings=2048, attn_implementation="sdpa")),
        "bert-base": ("bert", BertConfig(vocab_size=30522, hidden_size=d, num_hidden_layers=half,
                                         num_attention_heads=heads, intermediate_size=4 * d,
                                         max_position_embeddings=512, attn_implementation="sdpa")),
    }


def max_rel_diff(scores, reference) -> float:
    """Largest difference between two score tensors, relative to the largest reference score."""
    return float((scores - reference).abs().max() / reference.abs().max())


def dl19_pairs() -> list[tuple[str, str]]:
    """(query, passage) texts of the bundled DL19 BM25 top-100, 4,300 pairs in run order (read without the JVM)."""
    from ._paths import TOPICS_DIR
    from .candidates import bundled_candidates
    from .corpus import read_collection

    queries = read_collection(TOPICS_DIR / "topics.dl19-passage.txt")  # id<TAB>text
    run, texts = bundled_candidates("dl19-passage")
    return [(queries[q], texts[h.docid]) for q, hits in run.items() for h in hits]


def training_steps(n_steps: int, seed: int = 0) -> list[list[tuple[str, str]]]:
    """Each step: 8 real training queries x 8 bundled candidate passages, as (query, passage) pairs."""
    from .candidates import bundled_candidates
    from .corpus import read_collection

    queries = list(read_collection(QUERIES).values())
    passages = sorted(bundled_candidates("dl19-passage")[1].values())
    rng = random.Random(seed)
    return [[(q, p) for q in rng.sample(queries, 8) for p in rng.sample(passages, 8)] for _ in range(n_steps)]


class Bench:
    def __init__(self, device: str, steps: int, bucket_tokens: int, repeats: int = 1):
        import torch

        self.torch, self.device, self.steps, self.bucket_tokens = torch, device, steps, bucket_tokens
        self.repeats = repeats
        self.on_gpu = device.startswith("cuda")

    def sync(self):
        if self.on_gpu:
            self.torch.cuda.synchronize()

    def peak_gib(self) -> float | None:
        return self.torch.cuda.max_memory_allocated() / 2**30 if self.on_gpu else None

    def reset(self):
        if self.on_gpu:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def timed(self, run, repeats: int | None = None) -> list[float]:
        """Seconds of each of ``repeats`` (default :attr:`repeats`) calls of ``run``, after an untimed one (every
        shape's kernels, autotuning and CUDA graphs ready, as in a long run)."""
        run()
        self.sync()
        seconds = []
        for _ in range(repeats or self.repeats):
            began = time.perf_counter()
            run()
            self.sync()
            seconds.append(time.perf_counter() - began)
        return seconds

    @staticmethod
    def rates(seconds: list[float], sequences: int, tokens: int) -> dict:
        """Sequences and tokens per second at the median time, and sequences per second of every timed run."""
        median = statistics.median(seconds)
        return {"seq_per_s": sequences / median, "tokens_per_s": tokens / median,
                "seq_per_s_runs": [sequences / s for s in seconds]}

    def train(self, model, batches: list[list[dict]], config: str, repeats: int | None = None) -> dict:
        """Time passes of ``len(batches)`` optimizer steps on pre-tokenized features (see :meth:`timed`)."""
        optimizer = self.optimizer(model)

        def run():
            for features in batches:
                self.step(model, optimizer, features, config)

        tokens = sum(len(f["input_ids"]) for features in batches for f in features)
        return self.rates(self.timed(run, repeats), sum(map(len, batches)), tokens)

    def optimizer(self, model):
        return self.torch.optim.AdamW(model.parameters(), lr=1e-5, fused=self.on_gpu or None)

    def step(self, model, optimizer, features: list[dict], config: str) -> float:
        """One optimizer step of the group softmax loss over ``features`` batched as ``config``; returns the loss
        (a tensor, so that timing does not wait for it)."""
        from .modeling.packing import to_device
        from .training.losses import softmax_ce

        torch = self.torch
        model.train()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.on_gpu):
            parts = []
            for idx in self.buckets(features) if config == "bucketed" else [list(range(len(features)))]:
                chunk = [features[j] for j in idx]
                if config == "rounded":
                    batch = {k: to_device(v, self.device, non_blocking=True)  # from pinned memory, as model.batch
                             for k, v in model.collate(chunk, 128 if self.on_gpu else 1).items()}
                else:
                    batch = model.batch(chunk, self.device, pack=config.startswith("packed"))
                parts.append((idx, model(**batch).float()))
            scores = torch.zeros(len(features), device=self.device)
            for idx, part in parts:
                scores = scores.index_add(0, torch.tensor(idx, device=self.device), part)
            group = 8 if len(features) % 8 == 0 else len(features)
            loss = softmax_ce(scores.view(-1, group))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def buckets(self, features: list[dict]) -> list[list[int]]:
        """Length-sorted groups of indices, each at most ``bucket_tokens`` once padded to its longest."""
        order = sorted(range(len(features)), key=lambda j: len(features[j]["input_ids"]))
        groups, current = [], []
        for j in order:
            if current and (len(current) + 1) * len(features[j]["input_ids"]) > self.bucket_tokens:
                groups.append(current)
                current = []
            current.append(j)
        return groups + [current]

    def rerank(self, model, pairs, pack: bool) -> dict:
        """Time ``predict`` over ``pairs``, tokenization included (see :meth:`timed`)."""
        model.packing = pack
        seconds = self.timed(lambda: model.predict(pairs, batch_size=128, device=self.device))
        model.packing = None
        tokens = sum(len(f["input_ids"]) for f in model.tokenize([q for q, _ in pairs], [d for _, d in pairs]))
        return self.rates(seconds, len(pairs), tokens)

    def check_packing(self, model, features: list[dict], precisions=("fp32", "bf16"),
                      packed=contextlib.nullcontext) -> dict:
        """Largest difference between packed (run inside the ``packed()`` context) and right-padded scores of the
        same pairs, relative to the largest score, in fp32 and/or under bf16 autocast; beside it, the noise floor of
        padding the batch's two halves separately (other matrix shapes, so other kernels and summation orders)."""
        from ._kernels import accurate_fp32

        torch = self.torch
        model.eval()
        out = {}
        scores = {}
        for precision in precisions:
            with torch.no_grad(), accurate_fp32() if precision == "fp32" else torch.autocast(
                    self.device.split(":")[0], dtype=torch.bfloat16):
                for pack in (False, True):
                    with packed() if pack else contextlib.nullcontext():
                        scores[precision, pack] = model(**model.batch(features, self.device, pack=pack)).float()
                half = len(features) // 2
                scores[precision, "halves"] = torch.cat([model(**model.batch(part, self.device, pack=False)).float()
                                                         for part in (features[:half], features[half:])])
            padded = scores[precision, False]
            for key, name in ((True, "max_rel_diff"), ("halves", "padded_halves_max_rel_diff")):
                out[f"{precision}_{name}"] = max_rel_diff(scores[precision, key], padded)
        if len(precisions) == 2:  # how far bf16 moves padded and packed scores from fp32: the scale of bf16 noise
            for pack, name in ((False, "padded"), (True, "packed")):
                out[f"bf16_{name}_vs_fp32"] = max_rel_diff(scores["bf16", pack], scores["fp32", False])
        return out

    def loss_curves(self, make_model, batches: list[list[dict]]) -> dict:
        """The training loss of the same initial model on the same steps, right-padded through transformers
        (the reference path) and packed (the fast path)."""
        curves = {}
        for config in ("padded", "packed"):
            model = make_model()
            optimizer = self.optimizer(model)
            curves[config] = [float(self.step(model, optimizer, f, config)) for f in batches]
        diff = [abs(a - b) for a, b in zip(curves["padded"], curves["packed"])]
        return {"steps": len(batches), "max_abs_diff": max(diff), "mean_abs_diff": sum(diff) / len(diff), **curves}


def run_bench(device: str, small: bool, steps: int, bucket_tokens: int, models: list[str],
              workloads: list[str], check_steps: int = 0, repeats: int = 1) -> dict:
    import torch
    from transformers import AutoTokenizer

    from ._kernels import _version, kernel_info, kernels_for

    bench = Bench(device, steps, bucket_tokens, repeats)
    configs = model_configs(small)
    tokenizers = {k: AutoTokenizer.from_pretrained(FIXTURES / v) for k, v in TOKENIZERS.items()}
    steps_pairs = training_steps(steps + 2)
    rerank_pairs = dl19_pairs()
    if small:
        rerank_pairs = rerank_pairs[:64]
    name = torch.cuda.get_device_name(0) if bench.on_gpu else platform.processor() or platform.machine()
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    rows, checks = [], {}
    with kernels_for(device):
        for model_name in models:
            _bench_model(bench, model_name, configs[model_name], tokenizers, steps_pairs, rerank_pairs, small, steps,
                         peak, workloads, rows, checks, check_steps)
    versions = {package: _version(package) for package in ("transformers", "triton")}
    return {"date": datetime.date.today().isoformat(), "device": name, "kernels": kernel_info(), **versions,
            "small": small, "steps": steps, "repeats": repeats, "bucket_tokens": bucket_tokens,
            "sweep_tokens_per_step": SWEEP_TOKENS, "rows": rows, "checks": checks}


def _bench_model(bench, model_name, model_config, tokenizers, steps_pairs, rerank_pairs, small, steps, peak,
                 workloads, rows, checks, check_steps):
    import torch

    from ._kernels import GRAPHS_ENV, cuda_graphs
    from .modeling.cross_encoder import MambaCrossEncoder
    from .modeling.packing import MAMBA_TYPES, VARLEN, can_pack

    device = bench.device
    tokenizer_name, config = model_config

    def make_model():
        torch.manual_seed(0)
        return MambaCrossEncoder.from_backbone_config(config, tokenizers[tokenizer_name]).to(device)

    model = make_model()
    params = sum(p.numel() for p in model.parameters())
    info(f"{model_name}: {params / 1e6:.1f}M parameters")
    attention = config.model_type not in MAMBA_TYPES
    backbone_config = model.backbone.config

    @contextlib.contextmanager
    def packed_attention():  # attention models pack through torch's varlen flash attention (GPUs only)
        if attention:
            backbone_config._attn_implementation = VARLEN
        try:
            yield
        finally:
            if attention:
                backbone_config._attn_implementation = "sdpa"

    with packed_attention():
        packable = can_pack(backbone_config, device)
    packed = ("packed",) if packable else ()
    if packable and not attention and cuda_graphs(device):
        packed += ("packed-eager",)  # the same packed path without CUDA graphs: what the graphs are worth

    @contextlib.contextmanager
    def batching(config_name):  # the settings a configuration runs under
        with packed_attention() if config_name in packed else contextlib.nullcontext(), \
                patch.dict(os.environ, {GRAPHS_ENV: "0"} if config_name == "packed-eager" else {}):
            yield

    def record(workload, config_name, result, flops_per_token):
        mfu = flops_per_token * params * result["tokens_per_s"] / peak if peak else None
        rows.append({"model": model_name, "params_m": round(params / 1e6, 1), "workload": workload,
                     "config": config_name, **result, "peak_gib": bench.peak_gib(), "mfu": mfu})
        info(f"  {workload:<12}{config_name:<10}{result['seq_per_s']:10.1f} seq/s"
             f"{result['tokens_per_s']:12.0f} tok/s")

    batches = [model.tokenize([q for q, _ in s], [d for _, d in s]) for s in steps_pairs]
    if "train" in workloads:
        for config_name in ("padded", "rounded", "bucketed") + packed:
            bench.reset()
            with batching(config_name):
                record("train", config_name, bench.train(model, batches, config_name), 6)
    if "rerank" in workloads:
        for config_name in ("sorted",) + packed:
            bench.reset()
            with batching(config_name):
                record("rerank", config_name, bench.rerank(model, rerank_pairs, pack=config_name in packed), 2)
    if "sweep" in workloads:
        limit = getattr(config, "max_position_embeddings", None) or max(SWEEP)
        for length in [n for n in (SWEEP if not small else SWEEP[:2]) if n <= limit]:
            per_step = (SWEEP_TOKENS // 16 if small else SWEEP_TOKENS) // length // 8 * 8
            ids = torch.randint(5, 1000, (steps + 2, max(8, per_step), length))
            uniform = [[{"input_ids": row.tolist()} for row in step] for step in ids]
            bench.reset()
            try:
                record(f"sweep-{length}", "uniform", bench.train(model, uniform, "padded", repeats=1), 6)
            except torch.OutOfMemoryError:
                info(f"  sweep-{length}: out of memory")
    if packable:
        precisions = ("bf16",) if attention else ("fp32", "bf16")  # flash attention has no fp32
        checks[model_name] = {"packed_vs_padded": bench.check_packing(model, batches[0], precisions, packed_attention)}
        if check_steps and model_name in OURS:
            curves = [model.tokenize([q for q, _ in s], [d for _, d in s]) for s in training_steps(check_steps, 1)]
            checks[model_name]["loss_curves"] = bench.loss_curves(make_model, curves)
        info(f"  checks: {json.dumps(checks[model_name]['packed_vs_padded'])}")
        if "loss_curves" in checks[model_name]:
            curves = checks[model_name]["loss_curves"]
            info(f"  loss curves, padded vs packed: mean {curves['mean_abs_diff']:.4f}, "
                 f"max {curves['max_abs_diff']:.4f} over {curves['steps']} steps")


def summary(report: dict, ours: tuple[str, ...] = OURS) -> dict:
    """The headline: our Mamba-130M model that trains fastest (at its best batching) over each baseline's best,
    realistic workload, and over the paper's stack; ``per_model`` holds the same ratios for each of ``ours``."""
    def best(model, workload):
        return max((r["seq_per_s"] for r in report["rows"] if r["model"] == model and r["workload"] == workload),
                   default=None)

    paper = next((r["seq_per_s"] for r in report["rows"] if (r["model"], r["workload"], r["config"])
                  == (PAPER_STACK[0], "train", PAPER_STACK[1])), None)

    def ratios(mine):
        def ratio(model, workload):
            a, b = best(mine, workload), best(model, workload)
            return round(a / b, 3) if a and b else None

        train = best(mine, "train")
        return {"train_ratio_vs_pythia": ratio("pythia-160m", "train"),
                "rerank_ratio_vs_pythia": ratio("pythia-160m", "rerank"),
                "train_ratio_vs_bert": ratio("bert-base", "train"),
                "rerank_ratio_vs_bert": ratio("bert-base", "rerank"),
                "train_ratio_vs_paper_stack": round(train / paper, 3) if train and paper else None,
                "train_seq_per_s": round(train, 1) if train else None}

    measured = [m for m in ours if best(m, "train")]
    headline = max(measured, key=lambda m: best(m, "train"), default=ours[0])
    return {"device": report["device"], "date": report["date"], "model": headline, **ratios(headline),
            "per_model": {m: ratios(m) for m in measured}}


def markdown(report: dict) -> str:
    versions = f"transformers {report['transformers']}, triton {report['triton']}"
    lines = [f"Device: {report['device']}; {report['kernels']}; {versions}; {report['date']}", ""]
    if report["rows"]:
        lines += ["| model | workload | batching | seq/s (median) | min-max | real tokens/s | peak GiB | MFU |",
                  "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        peak = "—" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
        mfu = "—" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        runs = r["seq_per_s_runs"]
        lines.append(f"| {r['model']} | {r['workload']} | {r['config']} | {r['seq_per_s']:.1f} | "
                     f"{min(runs):.0f}-{max(runs):.0f} | {r['tokens_per_s']:,.0f} | {peak} | {mfu} |")
    for model, check in report.get("checks", {}).items():
        agree = ", ".join(f"{k} {v:.1e}" for k, v in check["packed_vs_padded"].items())
        lines.append(f"\n{model}: packed vs padded scores (max difference / max score): {agree}")
        if "loss_curves" in check:
            curves = check["loss_curves"]
            lines.append(f"{model}: training loss over {curves['steps']} steps, packed vs padded: max abs difference "
                         f"{curves['max_abs_diff']:.4f}, mean {curves['mean_abs_diff']:.4f}")
    return "\n".join(lines) + "\n"


def chart(report: dict, path: Path) -> bool:
    """A bar chart of sequences/s per model and workload; False when nothing was timed or matplotlib is missing."""
    rows = [r for r in report["rows"] if not r["workload"].startswith("sweep")]
    if not rows:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = [f"{r['model']}\n{r['workload']} {r['config']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(rows)), 4))
    ax.bar(range(len(rows)), [r["seq_per_s"] for r in rows])
    ax.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("sequences / s")
    ax.set_title(f"{report['device']}: training and reranking throughput")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", default="benchmarks/results", show_default=True, help="Directory for bench.{json,md,png}.")
@click.option("--name", default="bench", show_default=True, help="File stem of the results.")
@click.option("--device", default="auto", show_default=True)
@click.option("--small/--full", default=None, help="Tiny 2-layer models [small on CPU, full on GPU].")
@click.option("--steps", default=10, show_default=True, type=click.IntRange(1), help="Timed training steps.")
@click.option("--repeats", type=click.IntRange(1), default=None,
              help="Timed passes of each training and reranking configuration, reported at the median [5 on GPU, "
                   "1 with --small].")
@click.option("--bucket-tokens", default=8192, show_default=True, type=click.IntRange(1),
              help="Padded tokens per length bucket.")
@click.option("--models", default="mamba1-130m,mamba2-130m,pythia-160m,bert-base", show_default=True)
@click.option("--workloads", default=",".join(WORKLOADS), show_default=True,
              help="Timed workloads; empty: only the packing checks.")
@click.option("--check-steps", type=click.IntRange(0), default=None,
              help="Training steps of the padded-vs-packed loss-curve check [100 on GPU, 2 with --small].")
@handle_errors
def main(out, name, device, small, steps, repeats, bucket_tokens, models, workloads, check_steps):
    """Measure training and reranking throughput; write JSON, Markdown and a chart."""
    from ._io import atomic_write
    from .modeling.base import resolve_device

    device = resolve_device(device)
    small = (not device.startswith("cuda")) if small is None else small
    chosen, timed = ([x.strip() for x in names.split(",") if x.strip()] for names in (models, workloads))
    for kind, names, known in (("model", chosen, model_configs(True)), ("workload", timed, WORKLOADS)):
        unknown = set(names) - set(known)
        if unknown:
            raise ValueError(f"unknown {kind} {sorted(unknown)[0]!r}; choose from {', '.join(known)}")
    check_steps = (2 if small else 100) if check_steps is None else check_steps
    repeats = (1 if small else 5) if repeats is None else repeats
    report = run_bench(device, small, steps, bucket_tokens, chosen, timed, check_steps, repeats)
    out = Path(out)
    with atomic_write(out / f"{name}.json") as f:
        json.dump(report, f, indent=2)
    with atomic_write(out / f"{name}.md") as f:
        f.write(markdown(report))
    drawn = chart(report, out / f"{name}.png")
    headline = set(chosen) == set(model_configs(True)) and {"train", "rerank"} <= set(timed)  # what it compares
    if device.startswith("cuda") and not small and headline:
        with atomic_write(out / "summary.json") as f:
            json.dump(summary(report), f, indent=2)
    info(f"results written to {out}/{name}.json, .md{', .png' if drawn else ''}")


if __name__ == "__main__":
    main()
