"""``python -m mamba_pyserini.search``: topics -> first stage (BM25 or a run) -> Mamba reranker -> run + metrics."""
from __future__ import annotations

from pathlib import Path

import click

from ._cli import BadInput, handle_errors, info
from ._search_cli import (
    DEFAULT_MODEL,
    RUNS_DIR,
    command_line,
    model_name,
    output_options,
    rerank_options,
    rerank_stage,
    topic_options,
    write_and_evaluate,
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
    from .candidates import COLLECTION_NAME
    from .first_stage import BundledCandidates, Fused, RunFile
    from .sparse import Bm25Searcher
    from .topics import load_topics

    check_writable(output or RUNS_DIR / "run.txt")
    topic_set = load_topics(topics, topic_reader, qrels)
    if (dense is None) != (faiss_index is None):
        raise click.UsageError("--dense and --faiss-index go together")
    if dense and run_file:
        raise click.UsageError("--dense searches; --run reranks an existing run: choose one")
    if hybrid and not (dense and index):
        raise click.UsageError("--hybrid fuses BM25 over --index with --dense over --faiss-index: give all three")
    if run_file and not index:
        raise click.UsageError("--run needs --index: a Lucene index or a JSONL/TSV collection with the texts")
    bm25 = (k1, b, rm3, fb_terms, fb_docs, original_query_weight, threads)
    if dense:
        searcher, collection = _dense_searcher(dense, faiss_index, rerank, threads), Path(faiss_index).name
        if hybrid:
            searcher = Fused(Bm25Searcher(index, *bm25), searcher, fusion, alpha)
    elif run_file:
        searcher, collection = RunFile(run_file), Path(index).name
    elif index:
        searcher, collection = Bm25Searcher(index, *bm25), Path(index).name
    else:
        if (k1, b, fb_terms, fb_docs, original_query_weight) != (0.9, 0.4, 10, 10, 0.5):
            raise click.UsageError("the bundled candidates are Pyserini's defaults (BM25 k1=0.9 b=0.4, RM3 10 terms, "
                                   "10 documents, weight 0.5): give --index to change them")
        first_stage = "bm25-rm3" if rm3 else "bm25"
        try:
            searcher = BundledCandidates(topic_set.name, first_stage)
        except ValueError as e:
            raise BadInput(f"{e}: give --index, or --run with --index") from None
        collection = COLLECTION_NAME
        rerank["reranker"] = rerank["reranker"] or DEFAULT_MODEL
        info(f"first stage: bundled Pyserini {first_stage.upper()} (k1=0.9, b=0.4) top-100 for {topic_set.name}")
    run = searcher.search(topic_set.queries, hits)
    meta = {"command": command_line("search"), "topics": topic_set.name, "first_stage": searcher.condition}
    run, condition = rerank_stage(run, topic_set, searcher.texts, index, searcher.condition, meta, **rerank)
    output = Path(output or RUNS_DIR / f"run.{collection}.{condition}.{topic_set.name}.txt")
    write_and_evaluate(run, output, run_tag or condition, output_format, topic_set, meta, relevance_level)


def _dense_searcher(model_path, faiss_index, rerank: dict, threads: int):
    from .dense import DenseSearcher
    from .modeling.auto import load_model

    return DenseSearcher(load_model(model_path, kind="bi-encoder"), faiss_index, rerank["device"],
                         rerank["batch_size"], threads, model_name(model_path, "bi-encoder"))


if __name__ == "__main__":
    main()
