"""TREC run files: the Hit record, Pyserini's tie-break, reading and atomic writing (no JVM needed)."""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable

from ._io import atomic_write, first_seen, read_lines

OUTPUT_FORMATS = ("trec", "msmarco")


@dataclasses.dataclass(frozen=True)
class Hit:
    docid: str
    score: float


Run = dict[str, list[Hit]]


def sort_hits(hits: Iterable[Hit]) -> list[Hit]:
    """Pyserini's order: score descending at the written precision (6 decimals), then docid ascending."""
    return sorted(hits, key=lambda h: (-round(h.score, 6), h.docid))


def check_queries(run: Run, queries, topics_name: str = "the topics") -> None:
    """Every query of ``run`` must have a topic (its query text)."""
    missing = [qid for qid in run if qid not in queries]
    if missing:
        raise ValueError(f"{len(missing)} query id(s) of the run are not in {topics_name}, e.g. {missing[0]!r}")


def read_run(path: str | os.PathLike) -> Run:
    """Read a TREC run (``qid Q0 docid rank score tag``); hits come back in :func:`sort_hits` order. A docid twice for
    one query is refused (trec_eval would fail on it)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"run file not found: {path}")
    run: Run = {}
    seen: dict[tuple[str, str], int] = {}
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 6:
            raise ValueError(f"{path}:{lineno}: malformed run line {line.strip()[:80]!r}: "
                             "expected 'qid Q0 docid rank score tag'")
        qid, _, docid, rank, score, _ = parts
        try:
            int(rank)
            value = float(score)
        except ValueError:
            raise ValueError(f"{path}:{lineno}: malformed run line {line.strip()[:80]!r}: "
                             "rank must be an integer and score a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{path}:{lineno}: score {score} is not a finite number")
        first_seen(seen, (qid, docid), lineno, path, "query and docid")
        run.setdefault(qid, []).append(Hit(docid, value))
    if not run:
        raise ValueError(f"run file {path} has no hits")
    return {qid: sort_hits(hits) for qid, hits in run.items()}


def run_tag(path: str | os.PathLike) -> str | None:
    """The tag of a TREC run's first line (what made it), or None."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"run file not found: {path}")
    for _, line in read_lines(path):
        parts = line.split()
        if parts:
            return parts[5] if len(parts) == 6 else None
    return None


def write_run(run: Run, path: str | os.PathLike, tag: str, output_format: str = "trec") -> None:
    """Write ``run`` atomically in TREC (``qid Q0 docid rank score tag``) or MS MARCO (``qid docid rank``) format."""
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {output_format!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"run tag {tag!r} must be non-empty and contain no white space")
    for qid, hits in run.items():
        bad = next((h for h in hits if not math.isfinite(h.score)), None)
        if bad is not None:
            raise ValueError(f"score {bad.score} for query {qid}, document {bad.docid} is not a finite number")
    with atomic_write(path) as f:
        for qid, hits in run.items():
            for rank, hit in enumerate(sort_hits(hits), 1):
                if output_format == "trec":
                    f.write(f"{qid} Q0 {hit.docid} {rank} {hit.score:.6f} {tag}\n")
                else:
                    f.write(f"{qid}\t{hit.docid}\t{rank}\n")


def read_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Read TREC qrels (``qid iter docid relevance``) into ``{qid: {docid: relevance}}``; a (qid, docid) judged twice
    is refused."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"qrels file not found: {path}")
    qrels: dict[str, dict[str, int]] = {}
    seen: dict[tuple[str, str], int] = {}
    for lineno, line in read_lines(path):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4 or not parts[3].lstrip("-").isdigit():
            raise ValueError(f"{path}:{lineno}: malformed qrels line {line.strip()[:80]!r}: "
                             "expected 'qid iter docid relevance'")
        first_seen(seen, (parts[0], parts[2]), lineno, path, "judgement of query and docid")
        qrels.setdefault(parts[0], {})[parts[2]] = int(parts[3])
    if not qrels:
        raise ValueError(f"qrels file {path} has no judgements")
    return qrels


FUSIONS = ("rrf", "interpolation")


def fuse(sparse: Run, dense: Run, method: str = "rrf", k: int = 1000, rrf_k: int = 60, alpha: float = 0.1) -> Run:
    """Fuse a sparse and a dense run with Pyserini's own code: reciprocal-rank fusion (``pyserini.fusion``), or
    ``HybridSearcher``'s interpolation ``alpha * sparse + dense`` over min-max-centred scores."""
    if method not in FUSIONS:
        raise ValueError(f"unknown fusion {method!r}; choose one of {', '.join(FUSIONS)}")
    from .pyserini_compat import pyserini_module

    if method == "interpolation":
        HybridSearcher = pyserini_module("pyserini.search.hybrid").HybridSearcher

        return {qid: sort_hits(Hit(h.docid, float(h.score)) for h in HybridSearcher._hybrid_results(
            dense.get(qid, []), sparse.get(qid, []), alpha, k, normalization=True)) for qid in {**sparse, **dense}}
    reciprocal_rank_fusion = pyserini_module("pyserini.fusion").reciprocal_rank_fusion
    TrecRun = pyserini_module("pyserini.trectools").TrecRun

    def trec_run(run: Run) -> TrecRun:
        return TrecRun.from_list([(qid, "Q0", h.docid, rank, h.score, "run")
                                  for qid, hits in run.items() for rank, h in enumerate(sort_hits(hits), 1)])

    fused: Run = {}
    for row in reciprocal_rank_fusion([trec_run(sparse), trec_run(dense)], rrf_k=rrf_k, k=k).run_data.itertuples():
        fused.setdefault(str(row.topic), []).append(Hit(str(row.docid), float(row.score)))
    return {qid: sort_hits(hits) for qid, hits in fused.items()}
