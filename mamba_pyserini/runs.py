"""TREC run files: the Hit record, Pyserini's tie-break, reading and atomic writing (no JVM needed)."""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable

from ._io import atomic_write

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
    """Read a TREC run (``qid Q0 docid rank score tag``); hits come back in :func:`sort_hits` order."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"run file not found: {path}")
    run: Run = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
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
            run.setdefault(qid, []).append(Hit(docid, value))
    if not run:
        raise ValueError(f"run file {path} has no hits")
    return {qid: sort_hits(hits) for qid, hits in run.items()}


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
