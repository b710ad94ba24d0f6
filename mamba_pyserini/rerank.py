"""``python -m mamba_pyserini.rerank``: rerank any TREC run (Anserini's SearchCollection, Pyserini, ...) with a Mamba
model; the output is a TREC run that trec_eval, Pyserini's fusion and its 2CR scripts accept."""
from __future__ import annotations

from pathlib import Path

import click

from ._cli import handle_errors
from ._search_cli import (
    DEFAULT_MODEL,
    RUNS_DIR,
    command_line,
    output_options,
    rerank_options,
    rerank_stage,
    topic_options,
    write_and_evaluate,
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--run", "run_file", required=True, help="TREC run to rerank (qid Q0 docid rank score tag).")
@click.option("--index", required=True, help="Texts: a Lucene index (stored raw/contents, as LuceneSearcher.doc), a "
                                             "Pyserini prebuilt index name, a JSONL/TSV collection, or a FAISS index "
                                             "directory written by encode.")
@topic_options
@rerank_options
@output_options
@handle_errors
def main(run_file, index, topics, topic_reader, qrels, relevance_level, output, output_format, run_tag, **rerank):
    """Rerank RUN's top hits for TOPICS with a cross-encoder or bi-encoder (the bundled model by default) and write a
    TREC run."""
    from ._io import check_writable
    from .first_stage import RunFile
    from .topics import load_topics

    check_writable(output or RUNS_DIR / "run.txt")
    rerank["reranker"] = rerank["reranker"] or DEFAULT_MODEL
    topic_set = load_topics(topics, topic_reader, qrels)
    meta = {"command": command_line("rerank"), "topics": topic_set.name, "first_stage": str(run_file)}
    first_stage = RunFile(run_file)
    run, condition = rerank_stage(first_stage.search(topic_set.queries), topic_set, None, index, first_stage.condition,
                                  meta, **rerank)
    output = Path(output or RUNS_DIR / f"run.{condition}.txt")
    write_and_evaluate(run, output, run_tag or condition, output_format, topic_set, meta, relevance_level)


if __name__ == "__main__":
    main()
