"""MambaReranker: rerank first-stage hits with a cross-encoder (or a bi-encoder's similarity), keeping the rest of
the list below."""
from __future__ import annotations

from collections.abc import Mapping

from .runs import Hit, Run, check_queries, sort_hits

DOC_MODES = ("firstp", "maxp")


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
    ``segment_stride`` words and keeps each document's best."""

    def __init__(self, model, depth: int = 100, batch_size: int = 32, device: str | None = None,
                 show_progress_bar: bool = False, doc_mode: str = "firstp", segment_length: int = 150,
                 segment_stride: int = 75):
        if depth < 1:
            raise ValueError(f"rerank depth must be at least 1, not {depth}")
        if doc_mode not in DOC_MODES:
            raise ValueError(f"unknown document mode {doc_mode!r}; choose one of {', '.join(DOC_MODES)}")
        if not 1 <= segment_stride <= segment_length:
            raise ValueError(f"segment stride {segment_stride} must be between 1 and the segment length "
                             f"{segment_length}")
        self.model, self.depth, self.batch_size = model, depth, batch_size
        self.device, self.show_progress_bar = device, show_progress_bar
        self.doc_mode, self.segment_length, self.segment_stride = doc_mode, segment_length, segment_stride

    @classmethod
    def from_pretrained(cls, name_or_path: str, max_length: int | None = None, **kwargs) -> "MambaReranker":
        """A reranker over the cross-encoder or bi-encoder that ``name_or_path`` holds."""
        from .modeling.auto import load_model

        overrides = {} if max_length is None else {"max_length": max_length}
        return cls(load_model(name_or_path, **overrides), **kwargs)

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
            top = sort_hits(reranked[qid])
            floor = min((h.score for h in top), default=0.0)
            rest = [Hit(h.docid, floor - 1.0 - i) for i, h in enumerate(sort_hits(hits)[self.depth:])]
            reranked[qid] = top + rest
        return reranked
