"""What the ``search`` and ``rerank`` CLIs share: their options, the reranking stage, and writing a run with its
metrics and sidecar."""
from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

import click

from ._cli import info, kernel_option, option_group
from .topics import READERS

RUNS_DIR = Path("runs")
DEFAULT_MODEL = "default"  # the best bundled reranker (modeling/backbone.py: DEFAULT_KIND)
GENERIC_DIRS = ("model", "models", "checkpoint", "checkpoints", "final", "output", "best", "student")


def model_name(reranker: str, kind: str | None = None) -> str:
    """A name for the model in run names and tags: its hub id, else its directory's name, skipping generic ones
    (``.../all-MiniLM-L6-v2/model`` is ``all-MiniLM-L6-v2``)."""
    from .modeling.backbone import hub_id, resolve_checkpoint

    reranker = resolve_checkpoint(reranker, kind)
    reranker = hub_id(reranker) or reranker
    if not os.path.isdir(reranker):
        return reranker.replace("/", "--")
    path = Path(reranker).resolve()
    named = next((p for p in (path, *path.parents) if p.name.lower() not in GENERIC_DIRS), path)
    return named.name or path.name


topic_options = option_group(
    click.option("--topics", required=True,
                 help="Topic name as Pyserini spells it (dl19-passage, dl20-passage, dl19-doc, "
                      "msmarco-passage-dev-subset, ...), an alias (dl19, dl20), or a topic file."),
    click.option("--topic-reader", type=click.Choice(READERS),
                 help="Anserini topic reader for a topic file [guessed]."),
    click.option("--qrels", help="Qrels file for metrics (topic names bring their own)."),
    click.option("--relevance-level", type=click.IntRange(1),
                 help="Lowest grade that MAP and recall count as relevant (trec_eval -l) [2 for TREC DL passage "
                      "qrels, as Pyserini; else 1]."),
)
rerank_options = option_group(
    click.option("--reranker", help="Cross-encoder (or bi-encoder) checkpoint directory or hub id, 'default' (the "
                                    "bundled model) or 'none' [default over the bundled candidates, else none]."),
    click.option("--rerank-depth", default=100, show_default=True, type=click.IntRange(1),
                 help="Rerank the top K; the rest keeps its first-stage order below them."),
    click.option("--rerank-weight", type=click.FloatRange(0, 1),
                 help="The reranker's share against the first stage: each reranked hit scores W * z(reranker) + "
                      "(1 - W) * z(first stage), per-query z-scores; 1 reranks alone [the model's recommended weight "
                      "for this kind of first stage (bm25, bm25-rm3, or other: any run not named as our BM25), chosen "
                      "on DL21; 1 for models that recommend none]."),
    click.option("--doc-mode", default="firstp", show_default=True, type=click.Choice(["firstp", "maxp"]),
                 help="firstp: the text as max length truncates it; maxp: best of overlapping word windows."),
    click.option("--segment-length", default=150, show_default=True, type=click.IntRange(1),
                 help="MaxP window in words."),
    click.option("--segment-stride", default=75, show_default=True, type=click.IntRange(1),
                 help="MaxP stride in words."),
    click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1),
                 help="Pairs per batch (small batches keep a CPU's caches warm; raise it on a GPU)."),
    click.option("--max-length", type=click.IntRange(8), help="Override the checkpoint's max length in tokens."),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N."),
    kernel_option,
)
output_options = option_group(
    click.option("--output", help="Run file [runs/run.{collection}.{condition}.{topics}.txt]."),
    click.option("--output-format", default="trec", show_default=True, type=click.Choice(["trec", "msmarco"])),
    click.option("--run-tag", help="Run tag (TREC format) [the condition name]."),
)


def command_line(cli: str) -> str:
    """The command that reruns this one, for the sidecar."""
    return shlex.join(["python", "-m", f"mamba_pyserini.{cli}", *sys.argv[1:]])


def rerank_stage(run, topic_set, texts, text_source, condition: str, meta: dict, reranker, rerank_depth,
                 rerank_weight, doc_mode, segment_length, segment_stride, batch_size, max_length, device):
    """Rerank ``run`` when a reranker is named (texts from ``texts`` or else ``text_source``), interpolated with the
    first stage at ``rerank_weight`` (None: the model's recommendation for the first stage that ``condition`` names);
    returns the run and its condition name, and records the settings in ``meta``."""
    from .runs import check_queries
    from .texts import read_texts

    check_queries(run, topic_set.queries, topic_set.name)
    if reranker is None or reranker.lower() == "none":
        return run, condition
    from ._kernels import provenance
    from .modeling.base import resolve_device
    from .reranker import MambaReranker, first_stage_kind

    if texts is None:  # read before the model loads, so that a bad text source fails at once
        if not text_source:
            raise click.UsageError("reranking needs the texts: give --index (a Lucene index, a JSONL/TSV collection "
                                   "or a FAISS index directory)")
        texts = read_texts(text_source, {h.docid for hits in run.values() for h in hits[:rerank_depth]})
    model = MambaReranker.from_pretrained(reranker, max_length=max_length, depth=rerank_depth, batch_size=batch_size,
                                          device=device, show_progress_bar=True, doc_mode=doc_mode,
                                          segment_length=segment_length, segment_stride=segment_stride)
    model.weight = model.recommended_weight(condition) if rerank_weight is None else rerank_weight
    run = model.rerank_run(topic_set.queries, run, texts)
    mode = f".{doc_mode}" if doc_mode != "firstp" else ""
    settings = getattr(model.model, "config", None)
    meta["reranker"] = {"model": reranker, "depth": rerank_depth, "doc_mode": doc_mode,
                        **({"segment_length": segment_length, "segment_stride": segment_stride} if mode else {}),
                        "weight": model.weight, "first_stage_kind": first_stage_kind(condition),
                        **(settings.to_dict() if settings is not None else {"kind": model.model.KIND})}
    meta["provenance"] = provenance(resolve_device(device))
    fused = f".w{model.weight:g}" if model.weight < 1 else ""
    return run, f"{condition}.{model_name(reranker)}{mode}{fused}"


def write_and_evaluate(run, output: Path, tag: str, output_format: str, topic_set, meta: dict,
                       relevance_level: int | None = None) -> None:
    """Evaluate the run when there are qrels (printing the metrics), then write it and its ``.json`` sidecar."""
    from ._io import atomic_write
    from .evaluation import BINARY_CUTOFF_METRICS, evaluate_run
    from .evaluation import relevance_level as default_level
    from .runs import write_run

    metrics = {}
    if topic_set.qrels is None:
        info("no qrels for these topics: no metrics")
    else:
        level = relevance_level or default_level(topic_set.name, topic_set.qrels)
        with tempfile.TemporaryDirectory() as tmp:
            write_run(run, Path(tmp) / "run.trec", tag)
            metrics = evaluate_run(Path(tmp) / "run.trec", topic_set.qrels, level=level)
        meta.update(qrels=str(topic_set.qrels), relevance_level=level)
        click.echo(f"{'metric':<10}{topic_set.name} (relevance >= {level} for {', '.join(BINARY_CUTOFF_METRICS)})")
        for name, value in metrics.items():
            click.echo(f"{name:<10}{value:.4f}")
    write_run(run, output, tag, output_format)
    with atomic_write(output.with_name(output.name + ".json")) as f:
        json.dump({**meta, "metrics": metrics}, f, indent=2)
    info(f"run written to {output} ({len(run)} queries)")
