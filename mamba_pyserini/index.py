"""``python -m mamba_pyserini.index``: build a Lucene index from a JSONL/TSV collection or an HTML tarball."""
from __future__ import annotations

import click

from ._cli import handle_errors, info

COLLECTION_CLASSES = ("auto", "JsonCollection", "TsvCollection", "HtmlCollection")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--input", "input_path", required=True,
              help='Collection: JSONL ({"id","contents"}), TSV (id<TAB>text), HTML tarball, or a directory of them.')
@click.option("--index", required=True, help="Index directory to create.")
@click.option("--collection", default="auto", type=click.Choice(COLLECTION_CLASSES),
              help="Anserini collection class; 'auto' guesses it from the file names.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1))
@click.option("--overwrite", is_flag=True, help="Replace an existing index directory.")
@handle_errors
def main(input_path, index, collection, threads, overwrite):
    """Index a collection with Anserini's IndexCollection (positions, document vectors, raw and contents stored)."""
    from .sparse import build_index

    path = build_index(input_path, index, None if collection == "auto" else collection, threads, overwrite)
    info(f"index written to {path}")


if __name__ == "__main__":
    main()
