"""``python -m mamba_pyserini.search``: topics -> first stage (BM25 or a run) -> Mamba reranker -> run + metrics."""
from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

import click

from ._cli import BadInput, handle_errors, info, option_group
from .topics import READERS

RUNS_DIR = Path("runs")
DEFAULT_MODEL = "default"  # the bundled cross-encoder (modeling/backbone.py: DEFAULT_MODELS)


GENERIC_DIRS = ("model", "models", "checkpoint", "checkpoints", "final", "output", "best", "student")


def _model_name(reranker: str, kind: str | None = None) -> str:
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
                 help="Topic name as Pyserini spells it (dl19-passage, dl20-passage, dl19-doc, msmarco-passage-dev-subset, "
                      "...), an alias (dl19, dl20), or a topic file."),
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
)
output_options = option_group(
    click.option("--output", help="Run file [runs/run.{collection}.{condition}.{topics}.txt]."),
    click.option("--output-format", default="trec", show_default=True, type=click.Choice(["trec", "msmarco"])),
    click.option("--run-tag", help="Run tag (TREC format) [the condition name]."),
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@topic_options
@click.option("--index", help="BM25 over a Lucene index directory or Pyserini prebuilt index name; with --run or "
                              "--dense, also the text source for reranking (an index, a JSONL/TSV collection, or a "
                              "FAISS index directory). Default: the bundled candidates.")
@click.option("--run", "run_file", help="Rerank this TREC run instead of searching (texts from --index).")
@click.option("--k1", default=0.9, show_default=True, type=click.FloatRange(0), help="BM25 k1.")
@click.option("--b", default=0.4, show_default=True, type=click.FloatRange(0, 1), help="BM25 b.")
@click.option("--rm3", is_flag=True, help="BM25 + RM3 query expansion.")
@click.option("--fb-terms", default=10, show_default=True, type=click.IntRange(1), help="RM3 feedback terms.")
@click.option("--fb-docs", default=10, show_default=True, type=click.IntRange(1), help="RM3 feedback documents.")
@click.option("--original-query-weight", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="RM3 original query weight.")
@click.option("--dense", help="Dense first stage: a MambaBiEncoder checkpoint (or sentence-transformers directory) "
                              "whose queries search --faiss-index.")
@click.option("--faiss-index", help="FAISS index directory written by `python -m mamba_pyserini.encode`.")
@click.option("--hybrid", is_flag=True, help="Fuse BM25 over --index with the dense run (then rerank the fused list).")
@click.option("--fusion", default="rrf", show_default=True, type=click.Choice(["rrf", "interpolation"]),
              help="rrf: Pyserini's reciprocal-rank fusion; interpolation: HybridSearcher's alpha*sparse + dense.")
@click.option("--alpha", default=0.1, show_default=True, type=click.FloatRange(0),
              help="Sparse weight for --fusion interpolation.")
@click.option("--hits", default=1000, show_default=True, type=click.IntRange(1), help="First-stage depth.")
@rerank_options
@output_options
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1), help="BM25 search threads.")
@handle_errors
def main(topics, topic_reader, qrels, relevance_level, index, run_file, k1, b, rm3, fb_terms, fb_docs,
         original_query_weight, dense, faiss_index, hybrid, fusion, alpha, hits, output, output_format, run_tag,
         threads, **rerank):
    """Search TOPICS, rerank with a Mamba cross-encoder, write a TREC run and print trec_eval metrics."""
    from ._io import check_writable
    from .candidates import COLLECTION_NAME, bundled_candidates, bundled_names
    from .runs import fuse, read_run
    from .runs import run_tag as tag_of
    from .sparse import Bm25Searcher
    from .topics import load_topics

    check_writable(output or RUNS_DIR / "run.txt")
    topic_set = load_topics(topics, topic_reader, qrels)
    texts = None
    if (dense is None) != (faiss_index is None):
        raise click.UsageError("--dense and --faiss-index go together")
    if dense and run_file:
        raise click.UsageError("--dense searches; --run reranks an existing run: choose one")
    if hybrid and not (dense and index):
        raise click.UsageError("--hybrid fuses BM25 over --index with --dense over --faiss-index: give all three")
    if dense:
        run, collection, condition = _dense_run(dense, faiss_index, topic_set.queries, hits, rerank["batch_size"],
                                                rerank["device"], threads)
        if hybrid:
            searcher = Bm25Searcher(index, k1, b, rm3, fb_terms, fb_docs, original_query_weight)
            run = fuse(searcher.search(topic_set.queries, hits, threads), run, fusion, hits, alpha=alpha)
            condition = f"{searcher.condition}+{condition}.{fusion}"
    elif run_file:
        if not index:
            raise click.UsageError("--run needs --index: a Lucene index or a JSONL/TSV collection with the texts")
        run, collection, condition = read_run(run_file), Path(index).name, tag_of(run_file) or Path(run_file).stem
    elif index:
        searcher = Bm25Searcher(index, k1, b, rm3, fb_terms, fb_docs, original_query_weight)
        run, collection, condition = searcher.search(topic_set.queries, hits, threads), Path(index).name, searcher.condition
    else:
        if (k1, b, fb_terms, fb_docs, original_query_weight) != (0.9, 0.4, 10, 10, 0.5):
            raise click.UsageError("the bundled candidates are Pyserini's defaults (BM25 k1=0.9 b=0.4, RM3 10 terms, "
                                   "10 documents, weight 0.5): give --index to change them")
        first_stage = "bm25-rm3" if rm3 else "bm25"
        bundled = bundled_candidates(topic_set.name, first_stage)
        if bundled is None:
            raise BadInput(f"no bundled {first_stage} candidates for topics {topic_set.name!r} (bundled: "
                           f"{', '.join(bundled_names(first_stage))}): give --index, or --run with --index")
        run, texts = bundled
        collection, condition = COLLECTION_NAME, f"{first_stage}-default"
        rerank["reranker"] = rerank["reranker"] or DEFAULT_MODEL
        info(f"first stage: bundled Pyserini {first_stage.upper()} (k1=0.9, b=0.4) top-100 for {topic_set.name}")
    meta = {"command": command_line("search"), "topics": topic_set.name, "first_stage": condition}
    run, condition = rerank_stage(run, topic_set, texts, index, condition, meta, **rerank)
    output = Path(output or RUNS_DIR / f"run.{collection}.{condition}.{topic_set.name}.txt")
    write_and_evaluate(run, output, run_tag or condition, output_format, topic_set, meta, relevance_level)


def command_line(cli: str) -> str:
    """The command that reruns this one, for the sidecar."""
    return shlex.join(["python", "-m", f"mamba_pyserini.{cli}", *sys.argv[1:]])


def rerank_stage(run, topic_set, texts, text_source, condition: str, meta: dict, reranker, rerank_depth, doc_mode,
                 segment_length, segment_stride, batch_size, max_length, device):
    """Rerank ``run`` when a reranker is named (texts from ``texts`` or else ``text_source``); returns the run and
    its condition name, and records the settings in ``meta``."""
    from .corpus import read_texts
    from .runs import check_queries

    check_queries(run, topic_set.queries, topic_set.name)
    if reranker is None or reranker.lower() == "none":
        return run, condition
    from ._kernels import provenance
    from .modeling.base import resolve_device
    from .reranker import MambaReranker

    if texts is None:  # read before the model loads, so that a bad text source fails at once
        if not text_source:
            raise click.UsageError("reranking needs the texts: give --index (a Lucene index, a JSONL/TSV collection "
                                   "or a FAISS index directory)")
        texts = read_texts(text_source, {h.docid for hits in run.values() for h in hits[:rerank_depth]})
    model = MambaReranker.from_pretrained(reranker, max_length=max_length, depth=rerank_depth, batch_size=batch_size,
                                          device=device, show_progress_bar=True, doc_mode=doc_mode,
                                          segment_length=segment_length, segment_stride=segment_stride)
    run = model.rerank_run(topic_set.queries, run, texts)
    mode = f".{doc_mode}" if doc_mode != "firstp" else ""
    meta["reranker"] = {"model": reranker, "depth": rerank_depth, "doc_mode": doc_mode,
                        **({"segment_length": segment_length, "segment_stride": segment_stride} if mode else {}),
                        **model.model.config.to_dict()}
    meta["provenance"] = provenance(resolve_device(device))
    return run, f"{condition}.{_model_name(reranker)}{mode}"


def _dense_run(model_path, faiss_index, queries, hits, batch_size, device, threads):
    from .dense import DenseSearcher
    from .modeling.base import load_model

    searcher = DenseSearcher(load_model(model_path, kind="bi-encoder"), faiss_index, device, batch_size)
    return searcher.search(queries, hits, threads), Path(faiss_index).name, _model_name(model_path, "bi-encoder")


def write_and_evaluate(run, output: Path, tag: str, output_format: str, topic_set, meta: dict,
                       relevance_level: int | None = None) -> None:
    """Evaluate the run when there are qrels (printing the metrics), then write it and its ``.json`` sidecar."""
    from ._io import atomic_write
    from .evaluation import BINARY_CUTOFF_METRICS, evaluate_run, relevance_level as default_level
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


if __name__ == "__main__":
    main()
