"""``python -m mamba_pyserini.prepare``: download MS MARCO training data (on a connected machine) and lay it out for
``search`` (BM25 over training queries), ``train mine-negatives`` and ``train``:

    OUTPUT/collection.tsv             pid<TAB>text (documents: url title body, as Pyserini's msmarco-v1-doc index)
    OUTPUT/queries.train.tsv          qid<TAB>query
    OUTPUT/qrels.train.tsv            qid 0 pid 1
    OUTPUT/queries.train.sample.tsv   N judged training queries, sampled with a seed

Downloads are kept in OUTPUT/downloads and skipped when present; ``--url-base`` points at a mirror (or file://)."""
from __future__ import annotations

import gzip
import random
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import click

from ._cli import handle_errors, info
from ._io import atomic_write
from .corpus import read_collection
from .runs import read_qrels

URL_BASE = "https://msmarco.z22.web.core.windows.net/msmarcoranking"
DATASETS = {
    "msmarco-passage": {"collectionandqueries.tar.gz": None},
    "msmarco-doc": {"msmarco-docs.tsv.gz": "collection.tsv", "msmarco-doctrain-queries.tsv.gz": "queries.train.tsv",
                    "msmarco-doctrain-qrels.tsv.gz": "qrels.train.tsv"},
}
PASSAGE_FILES = ("collection.tsv", "queries.train.tsv", "qrels.train.tsv")


def download(url: str, dest: Path) -> Path:
    if not dest.is_file():
        info(f"downloading {url}")
        try:
            with urllib.request.urlopen(url) as response, atomic_write(dest, "wb") as f:
                shutil.copyfileobj(response, f, length=1 << 20)
        except urllib.error.URLError as e:
            raise RuntimeError(f"cannot download {url}: {e.reason}") from None
    return dest


def prepare(dataset: str, output: str | Path, train_queries: int = 100_000, seed: int = 42,
            url_base: str = URL_BASE) -> Path:
    """Download ``dataset`` (msmarco-passage or msmarco-doc) into ``output`` and write the files above."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    output = Path(output)
    for name, target in DATASETS[dataset].items():
        archive = download(f"{url_base.rstrip('/')}/{name}", output / "downloads" / name)
        if target is None:  # the passage tarball
            with tarfile.open(archive) as tar:
                members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
                for wanted in PASSAGE_FILES:
                    if wanted not in members:
                        raise ValueError(f"{archive} has no {wanted}")
                    with tar.extractfile(members[wanted]) as src, atomic_write(output / wanted, "wb") as f:
                        shutil.copyfileobj(src, f, length=1 << 20)
        elif target == "collection.tsv":  # docid, url, title, body -> docid, "url title body"
            with gzip.open(archive, "rt", encoding="utf-8") as src, atomic_write(output / target) as f:
                for line in src:
                    docid, *fields = line.rstrip("\n").split("\t")
                    f.write(f"{docid}\t{' '.join(x for x in fields if x)}\n")
        else:
            with gzip.open(archive, "rb") as src, atomic_write(output / target, "wb") as f:
                shutil.copyfileobj(src, f, length=1 << 20)
    judged = sorted(read_qrels(output / "qrels.train.tsv"))
    queries = read_collection(output / "queries.train.tsv")
    pool = [q for q in judged if q in queries]
    sample = sorted(random.Random(seed).sample(pool, min(train_queries, len(pool))), key=lambda q: (len(q), q))
    with atomic_write(output / "queries.train.sample.tsv") as f:
        f.writelines(f"{q}\t{queries[q]}\n" for q in sample)
    info(f"{dataset}: {len(sample)} of {len(pool)} judged training queries sampled into {output}")
    return output


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("dataset", type=click.Choice(sorted(DATASETS)))
@click.option("--output", required=True, help="Directory for the prepared files.")
@click.option("--train-queries", default=100_000, show_default=True, type=click.IntRange(1),
              help="Judged training queries to sample for BM25 hard negatives.")
@click.option("--seed", default=42, show_default=True)
@click.option("--url-base", default=URL_BASE, show_default=True, help="Where the MS MARCO files are.")
@handle_errors
def main(dataset, output, train_queries, seed, url_base):
    """Download and lay out MS MARCO passage or document training data."""
    prepare(dataset, output, train_queries, seed, url_base)


if __name__ == "__main__":
    main()
