"""First stages behind one protocol, :class:`Searcher`: BM25 (``sparse.Bm25Searcher``), dense retrieval
(``dense.DenseSearcher``), a run file, the bundled candidates, and the fusion of a sparse and a dense one. The
``search`` CLI and the DataFrame pipeline (``pipeline.Retrieve``) take any of them."""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from .runs import Hit, Run, sort_hits


class Searcher(Protocol):
    """``search(queries, k)``: the top ``k`` hits of each query (``{qid: query}``); ``condition``: the run's name in
    run tags and file names; ``texts``: the hits' texts where the first stage has them (else None: a reranker reads
    them from a text source)."""

    condition: str
    texts: Mapping[str, str] | None

    def search(self, queries: Mapping[str, str], k: int = 1000) -> Run: ...


def batch_search(searcher, queries: Mapping[str, str], k: int, threads: int) -> Run:
    """A Pyserini searcher's ``batch_search`` (Lucene or FAISS) as a run in :func:`runs.sort_hits` order."""
    qids = list(queries)
    results = searcher.batch_search([queries[q] for q in qids], qids, k=k, threads=threads)
    return {qid: sort_hits(Hit(h.docid, float(h.score)) for h in results[qid]) for qid in qids}


@dataclasses.dataclass
class RunFile:
    """A TREC run, reranked as it stands: every query and hit it holds (``k`` is not applied), named by its tag or,
    without one, its file name."""

    path: str
    texts: Mapping[str, str] | None = None

    @functools.cached_property
    def condition(self) -> str:
        from .runs import run_tag

        return run_tag(self.path) or Path(self.path).stem

    def search(self, queries: Mapping[str, str], k: int = 1000) -> Run:
        from .runs import read_run

        return read_run(self.path)


class BundledCandidates:
    """The bundled Pyserini ``bm25`` or ``bm25-rm3`` top-100 of a topic set, with the passages' texts."""

    def __init__(self, topic_name: str, first_stage: str = "bm25"):
        from .candidates import bundled_candidates, bundled_names

        bundled = bundled_candidates(topic_name, first_stage)
        if bundled is None:
            raise ValueError(f"no bundled {first_stage} candidates for topics {topic_name!r} (bundled: "
                             f"{', '.join(bundled_names(first_stage))})")
        self.run, self.texts = bundled
        self.condition = f"{first_stage}-default"

    def search(self, queries: Mapping[str, str], k: int = 1000) -> Run:
        return {q: self.run[q][:k] for q in queries if q in self.run}


@dataclasses.dataclass
class Fused:
    """A sparse and a dense first stage fused as ``runs.fuse`` does (``rrf`` or ``interpolation`` with ``alpha``)."""

    sparse: Searcher
    dense: Searcher
    method: str = "rrf"
    alpha: float = 0.1
    texts = None

    @property
    def condition(self) -> str:
        return f"{self.sparse.condition}+{self.dense.condition}.{self.method}"

    def search(self, queries: Mapping[str, str], k: int = 1000) -> Run:
        from .runs import fuse

        return fuse(self.sparse.search(queries, k), self.dense.search(queries, k), self.method, k, alpha=self.alpha)
