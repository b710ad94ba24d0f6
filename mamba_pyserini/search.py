"""``python -m mamba_pyserini.search``: topics -> first stage (BM25 or a run) -> Mamba reranker -> run + metrics."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import click

from ._cli import BadInput, handle_errors, info
from .topics import READERS

RUNS_DIR = Path("runs")


def _model_name(reranker: str) -> str:
    return Path(reranker.rstrip("/")).name if os.path.isdir(reranker) else reranker.replace("/", "--")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--topics", required=True,
              help="Topic name as Pyserini spells it (dl19-passage, dl20-passage, dl19-doc, msmarco-passage-dev-subset, "
                   "...), an alias (dl19, dl20), or a topic file.")
@click.option("--topic-reader", type=click.Choice(READERS), help="Anserini topic reader for a topic file [guessed].")
@click.option("--qrels", help="Qrels file for metrics (topic names bring their own).")
@click.option("--index", help="BM25 over a Lucene index directory or Pyserini prebuilt index name; with --run, the "
                              "text source (an index, or a JSONL/TSV collection). Default: the bundled candidates.")
@click.option("--run", "run_file", help="Rerank this TREC run instead of searching (texts from --index).")
@click.option("--k1", default=0.9, show_default=True, help="BM25 k1.")
@click.option("--b", default=0.4, show_default=True, help="BM25 b.")
@click.option("--rm3", is_flag=True, help="BM25 + RM3 query expansion.")
@click.option("--fb-terms", default=10, show_default=True, help="RM3 feedback terms.")
@click.option("--fb-docs", default=10, show_default=True, help="RM3 feedback documents.")
@click.option("--original-query-weight", default=0.5, show_default=True, help="RM3 original query weight.")
@click.option("--dense", help="Dense first stage: a MambaBiEncoder checkpoint (or sentence-transformers directory) "
                              "whose queries search --faiss-index.")
@click.option("--faiss-index", help="FAISS index directory written by `python -m mamba_pyserini.encode`.")
@click.option("--hybrid", is_flag=True, help="Fuse BM25 over --index with the dense run (then rerank the fused list).")
@click.option("--fusion", default="rrf", show_default=True, type=click.Choice(["rrf", "interpolation"]),
              help="rrf: Pyserini's reciprocal-rank fusion; interpolation: HybridSearcher's alpha*sparse + dense.")
@click.option("--alpha", default=0.1, show_default=True, help="Sparse weight for --fusion interpolation.")
@click.option("--hits", default=1000, show_default=True, type=click.IntRange(1), help="First-stage depth.")
@click.option("--reranker", help="Cross-encoder: a checkpoint directory or hub id; 'none' for first stage only.")
@click.option("--rerank-depth", default=100, show_default=True, type=click.IntRange(1),
              help="Rerank the top K; the rest keeps its first-stage order below them.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--max-length", type=click.IntRange(8), help="Override the checkpoint's max length in tokens.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--output", help="Run file [runs/run.{collection}.{condition}.{topics}.txt].")
@click.option("--output-format", default="trec", show_default=True, type=click.Choice(["trec", "msmarco"]))
@click.option("--run-tag", help="Run tag (TREC format) [the condition name].")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1), help="BM25 search threads.")
@handle_errors
def main(topics, topic_reader, qrels, index, run_file, k1, b, rm3, fb_terms, fb_docs, original_query_weight, dense,
         faiss_index, hybrid, fusion, alpha, hits, reranker, rerank_depth, batch_size, max_length, device, output, output_format, run_tag, threads):
    """Search TOPICS, rerank with a Mamba cross-encoder, write a TREC run and print trec_eval metrics."""
    from .candidates import COLLECTION_NAME, bundled_candidates, bundled_names
    from .corpus import read_texts
    from .runs import check_queries, fuse, read_run
    from .sparse import Bm25Searcher
    from .topics import load_topics

    topic_set = load_topics(topics, topic_reader, qrels)
    texts = None
    if (dense is None) != (faiss_index is None):
        raise click.UsageError("--dense and --faiss-index go together")
    if dense and run_file:
        raise click.UsageError("--dense searches; --run reranks an existing run: choose one")
    if hybrid and not (dense and index):
        raise click.UsageError("--hybrid fuses BM25 over --index with --dense over --faiss-index: give all three")
    if dense:
        run, collection, condition = _dense_run(dense, faiss_index, topic_set.queries, hits, batch_size, device,
                                                threads)
        if hybrid:
            searcher = Bm25Searcher(index, k1, b, rm3, fb_terms, fb_docs, original_query_weight)
            run = fuse(searcher.search(topic_set.queries, hits, threads), run, fusion, hits, alpha=alpha)
            condition = f"{searcher.condition}+{condition}.{fusion}"
    elif run_file:
        if not index:
            raise click.UsageError("--run needs --index: a Lucene index or a JSONL/TSV collection with the texts")
        run, collection, condition = read_run(run_file), Path(index).name, Path(run_file).stem
    elif index:
        searcher = Bm25Searcher(index, k1, b, rm3, fb_terms, fb_docs, original_query_weight)
        run, collection, condition = searcher.search(topic_set.queries, hits, threads), Path(index).name, searcher.condition
    else:
        if rm3 or (k1, b) != (0.9, 0.4):
            raise click.UsageError("the bundled candidates are BM25 k1=0.9 b=0.4: give --index to change BM25")
        bundled = bundled_candidates(topic_set.name)
        if bundled is None:
            raise BadInput(f"no bundled candidates for topics {topic_set.name!r} (bundled: "
                           f"{', '.join(bundled_names())}): give --index, or --run with --index")
        run, texts = bundled
        collection, condition = COLLECTION_NAME, "bm25-default"
        info(f"first stage: bundled Pyserini BM25 (k1=0.9, b=0.4) top-100 for {topic_set.name}")
    check_queries(run, topic_set.queries, topic_set.name)

    meta = {"command": sys.argv, "topics": topic_set.name, "first_stage": condition}
    if reranker is None:
        info("no --reranker given and no default model is bundled yet: first stage only")
    elif reranker.lower() != "none":
        from .reranker import MambaReranker

        model = MambaReranker.from_pretrained(reranker, max_length=max_length, depth=rerank_depth,
                                              batch_size=batch_size, device=device, show_progress_bar=True)
        if texts is None:
            if not index:
                raise click.UsageError("reranking needs the texts: give --index (a Lucene index or a JSONL/TSV "
                                       "collection)")
            wanted = {h.docid for hits_ in run.values() for h in hits_[:rerank_depth]}
            texts = read_texts(index, wanted)
        run = model.rerank_run(topic_set.queries, run, texts)
        condition = f"{condition}.{_model_name(reranker)}"
        meta["reranker"] = {"model": reranker, "depth": rerank_depth, **model.model.config.to_dict()}

    output = Path(output or RUNS_DIR / f"run.{collection}.{condition}.{topic_set.name}.txt")
    _write_and_evaluate(run, output, run_tag or condition, output_format, topic_set, meta)


def _dense_run(model_path, faiss_index, queries, hits, batch_size, device, threads):
    from .dense import DenseSearcher
    from .modeling.base import load_model

    searcher = DenseSearcher(load_model(model_path, kind="bi-encoder"), faiss_index, device, batch_size)
    return searcher.search(queries, hits, threads), Path(faiss_index).name, _model_name(model_path)


def _write_and_evaluate(run, output: Path, tag: str, output_format: str, topic_set, meta: dict) -> None:
    """Write the run, print its metrics when there are qrels, and write the ``.json`` sidecar beside it."""
    from ._io import atomic_write
    from .evaluation import evaluate_run
    from .runs import write_run

    write_run(run, output, tag, output_format)
    info(f"run written to {output} ({len(run)} queries)")
    metrics = {}
    if topic_set.qrels is None:
        info("no qrels for these topics: no metrics")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            trec_run = output if output_format == "trec" else Path(tmp) / "run.trec"
            if trec_run != output:
                write_run(run, trec_run, tag)
            metrics = evaluate_run(trec_run, topic_set.qrels, qrels_name=topic_set.name)
        click.echo(f"{'metric':<10}{topic_set.name}")
        for name, value in metrics.items():
            click.echo(f"{name:<10}{value:.4f}")
    with atomic_write(output.with_name(output.name + ".json")) as f:
        json.dump({**meta, "metrics": metrics}, f, indent=2)


if __name__ == "__main__":
    main()
