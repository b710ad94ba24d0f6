"""BM25 (and BM25+RM3) first stage and Lucene indexing through Pyserini/Anserini."""
from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

from ._io import atomic_dir
from ._java import autoclass
from .corpus import collection_format, is_lucene_index, iter_collection
from .first_stage import batch_search
from .runs import Run

COLLECTION_CLASSES = {"jsonl": "JsonCollection", "tsv": "TsvCollection", "html": "HtmlCollection"}


@functools.cache
def open_searcher(index: str):
    """A Pyserini ``LuceneSearcher`` over a local index directory or a Pyserini prebuilt index name."""
    from .pyserini_compat import prebuilt_lucene_searcher, pyserini_module

    if os.path.isdir(index):
        if not is_lucene_index(index):
            raise ValueError(f"{index} is not a Lucene index directory (no segments_* file)")
        return pyserini_module("pyserini.search.lucene").LuceneSearcher(index)
    if os.path.exists(index):
        raise ValueError(f"{index} is a file, not a Lucene index directory")
    return prebuilt_lucene_searcher(index)


@dataclasses.dataclass
class Bm25Searcher:
    """BM25 with explicit parameters (Pyserini's bm25-default 0.9/0.4 unless told), optionally with RM3, searched in
    ``threads`` threads; a ``first_stage.Searcher``."""

    index: str
    k1: float = 0.9
    b: float = 0.4
    rm3: bool = False
    fb_terms: int = 10
    fb_docs: int = 10
    original_query_weight: float = 0.5
    threads: int = 1
    texts = None  # a reranker reads them from the index

    @property
    def condition(self) -> str:
        name = "bm25-default" if (self.k1, self.b) == (0.9, 0.4) else f"bm25-k1_{self.k1}-b_{self.b}"
        return f"{name}+rm3" if self.rm3 else name

    def searcher(self):
        searcher = open_searcher(self.index)
        searcher.set_bm25(self.k1, self.b)
        if self.rm3:
            searcher.set_rm3(self.fb_terms, self.fb_docs, self.original_query_weight)
        else:
            searcher.unset_rm3()
        return searcher

    def search(self, queries: dict[str, str], k: int = 1000) -> Run:
        return batch_search(self.searcher(), queries, k, self.threads)


def guess_collection_class(path: str | os.PathLike) -> str:
    """Anserini's collection class for a file (or a directory's first file), from its name."""
    path = Path(path)
    if path.is_dir():
        path = next((p for p in sorted(path.iterdir()) if p.is_file()), None)
        if path is None:
            raise ValueError("the collection directory has no files")
    if path.name.lower().endswith((".tar.gz", ".tgz", ".html", ".htm")):
        return COLLECTION_CLASSES["html"]
    return COLLECTION_CLASSES[collection_format(path)]


def build_index(collection: str | os.PathLike, index: str | os.PathLike, collection_class: str | None = None,
                threads: int = 1, overwrite: bool = False) -> str:
    """Index a collection (JSONL, TSV, HTML tarball, or a directory of them) with Anserini's ``IndexCollection``,
    storing positions, document vectors, raw documents and contents (for RM3 and reranking).
    The index is built beside ``index`` and renamed into place when complete."""
    collection, index = Path(collection), Path(index)
    if not collection.exists():
        raise FileNotFoundError(f"collection not found: {collection}")
    if index.exists() and not overwrite:
        raise ValueError(f"index directory {index} already exists (use --overwrite to replace it)")
    collection_class = collection_class or guess_collection_class(collection)
    files = sorted(p for p in collection.iterdir() if p.is_file()) if collection.is_dir() else [collection]
    if collection_class in ("JsonCollection", "TsvCollection"):
        for f in files:  # fail on a malformed line before Anserini silently skips it
            for _ in iter_collection(f):
                pass
    with atomic_dir(index, overwrite) as built:
        inputs = built.parent / "input"  # Anserini reads a directory
        inputs.mkdir()
        for f in files:
            (inputs / f.name).symlink_to(f.resolve())
        built.rmdir()  # Anserini creates it
        autoclass("io.anserini.index.IndexCollection").main([
            "-collection", collection_class, "-input", str(inputs), "-index", str(built),
            "-generator", "DefaultLuceneDocumentGenerator", "-threads", str(threads),
            "-storePositions", "-storeDocvectors", "-storeRaw", "-storeContents"])
        if not is_lucene_index(built):
            raise RuntimeError(f"Anserini built no index from {collection} with {collection_class}")
    return str(index)
