"""MambaReranker: rerank first-stage hits with a cross-encoder (or a bi-encoder's similarity), keeping the rest of
the list below."""
from __future__ import annotations

import re
import statistics
from collections.abc import Mapping

from .modeling.config import FIRST_STAGES
from .runs import Hit, Run, check_queries, sort_hits

DOC_MODES = ("firstp", "maxp")
BM25 = r"bm25(-default|-k1_[0-9.]+-b_[0-9.]+)?"  # the conditions of our BM25 runs (sparse.Bm25Searcher.condition)


def first_stage_kind(name: str) -> str:
    """'bm25', 'bm25-rm3' or 'other': the kind of first stage a condition or run tag names (``bm25-default``,
    ``bm25-default+rm3``, ``bm25-rm3-default``, ...). Anything else, fused runs included, is 'other': a first stage
    that may be strong, which a model's recommended weight must not lower."""
    name = name.lower()
    if re.fullmatch(BM25, name):
        return "bm25"
    if re.fullmatch(rf"{BM25}\+rm3|bm25-rm3(-default)?", name):
        return "bm25-rm3"
    return FIRST_STAGES[-1]


def zscores(scores: list[float]) -> list[float]:
    """Scores standardised over the list (a list with no spread gives zeros)."""
    mean, spread = statistics.fmean(scores), statistics.pstdev(scores)
    return [(x - mean) / (spread or 1.0) for x in scores]


def segments(text: str, length: int, stride: int) -> list[str]:
    """Overlapping windows of ``length`` words every ``stride`` words, the last one reaching the end (MaxP)."""
    words = text.split()
    out = []
    for start in range(0, max(len(words), 1), stride):
        out.append(" ".join(words[start:start + length]))
        if start + length >= len(words):
            break
    return out


class MambaReranker:
    """Reranks the top ``depth`` hits of each query by the model's score; hits below keep their first-stage order.
    ``model`` is anything with ``predict(pairs, batch_size, device, show_progress_bar)``: a MambaCrossEncoder or a
    MambaBiEncoder.

    ``doc_mode`` is how long documents are read: ``firstp`` scores the text as the model's max length truncates it (the
    paper's setting, its first 512 tokens); ``maxp`` scores windows of ``segment_length`` words every
    ``segment_stride`` words and keeps each document's best.

    ``weight`` below 1 interpolates with the first stage: each reranked hit scores ``weight * z(model) + (1 - weight)
    * z(first stage)``, both standardised over the query's reranked hits (:meth:`recommended_weight` gives the
    model's own choice for a kind of first stage)."""

    def __init__(self, model, depth: int = 100, batch_size: int = 32, device: str | None = None,
                 show_progress_bar: bool = False, doc_mode: str = "firstp", segment_length: int = 150,
                 segment_stride: int = 75, weight: float = 1.0):
        if depth < 1:
            raise ValueError(f"rerank depth must be at least 1, not {depth}")
        if not 0 <= weight <= 1:
            raise ValueError(f"rerank weight must be between 0 and 1, not {weight}")
        if doc_mode not in DOC_MODES:
            raise ValueError(f"unknown document mode {doc_mode!r}; choose one of {', '.join(DOC_MODES)}")
        if not 1 <= segment_stride <= segment_length:
            raise ValueError(f"segment stride {segment_stride} must be between 1 and the segment length "
                             f"{segment_length}")
        self.model, self.depth, self.batch_size = model, depth, batch_size
        self.device, self.show_progress_bar = device, show_progress_bar
        self.doc_mode, self.segment_length, self.segment_stride = doc_mode, segment_length, segment_stride
        self.weight = weight

    @classmethod
    def from_pretrained(cls, name_or_path: str, max_length: int | None = None, **kwargs) -> "MambaReranker":
        """A reranker over the cross-encoder or bi-encoder that ``name_or_path`` holds."""
        from .modeling.auto import load_model

        overrides = {} if max_length is None else {"max_length": max_length}
        return cls(load_model(name_or_path, **overrides), **kwargs)

    def recommended_weight(self, first_stage: str) -> float:
        """The model's recommended weight against the kind of first stage that ``first_stage`` (a condition or run
        tag) names (:func:`first_stage_kind`), from its config; 1 where it recommends none."""
        weights = getattr(getattr(self.model, "config", None), "rerank_weights", None) or {}
        return float(weights.get(first_stage_kind(first_stage), 1.0))

    def rerank(self, query: str, hits: list[Hit], texts: Mapping[str, str]) -> list[Hit]:
        return self.rerank_run({"q": query}, {"q": hits}, texts)["q"]

    def rerank_run(self, queries: Mapping[str, str], run: Run, texts: Mapping[str, str]) -> Run:
        """Rerank every query of ``run``; all pairs are scored together, in length-sorted batches."""
        check_queries(run, queries)
        pairs, owners = [], []
        for qid, hits in run.items():
            for hit in sort_hits(hits)[:self.depth]:
                text = texts[hit.docid]
                parts = segments(text, self.segment_length, self.segment_stride) if self.doc_mode == "maxp" else [text]
                pairs += [(queries[qid], part) for part in parts]
                owners += [(qid, hit.docid)] * len(parts)
        scores = self.model.predict(pairs, batch_size=self.batch_size, device=self.device,
                                    show_progress_bar=self.show_progress_bar)
        best: dict[tuple[str, str], float] = {}
        for owner, score in zip(owners, scores.tolist()):
            best[owner] = max(score, best.get(owner, score))
        reranked: Run = {qid: [] for qid in run}
        for (qid, docid), score in best.items():
            reranked[qid].append(Hit(docid, score))
        for qid, hits in run.items():
            top = sort_hits(self._interpolate(reranked[qid], hits))
            floor = min((h.score for h in top), default=0.0)
            rest = [Hit(h.docid, floor - 1.0 - i) for i, h in enumerate(sort_hits(hits)[self.depth:])]
            reranked[qid] = top + rest
        return reranked

    def _interpolate(self, reranked: list[Hit], first_stage: list[Hit]) -> list[Hit]:
        if self.weight == 1 or not reranked:
            return reranked
        before = {h.docid: h.score for h in first_stage}
        mine, theirs = zscores([h.score for h in reranked]), zscores([before[h.docid] for h in reranked])
        return [Hit(h.docid, self.weight * a + (1 - self.weight) * b) for h, a, b in zip(reranked, mine, theirs)]
