"""MambaReranker: rerank first-stage hits with a cross-encoder (or a bi-encoder's similarity), keeping the rest of
the list below."""
from __future__ import annotations

from collections.abc import Mapping

from .runs import Hit, Run, check_queries, sort_hits


class MambaReranker:
    """Reranks the top ``depth`` hits of each query by the model's score; hits below keep their first-stage order.
    ``model`` is anything with ``predict(pairs, batch_size, device, show_progress_bar)``: a MambaCrossEncoder or a
    MambaBiEncoder."""

    def __init__(self, model, depth: int = 100, batch_size: int = 32, device: str | None = None,
                 show_progress_bar: bool = False):
        if depth < 1:
            raise ValueError(f"rerank depth must be at least 1, not {depth}")
        self.model, self.depth, self.batch_size = model, depth, batch_size
        self.device, self.show_progress_bar = device, show_progress_bar

    @classmethod
    def from_pretrained(cls, name_or_path: str, max_length: int | None = None, **kwargs) -> "MambaReranker":
        """A reranker over the cross-encoder or bi-encoder that ``name_or_path`` holds."""
        from .modeling.base import load_model

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
                pairs.append((queries[qid], texts[hit.docid]))
                owners.append((qid, hit.docid))
        scores = self.model.predict(pairs, batch_size=self.batch_size, device=self.device,
                                    show_progress_bar=self.show_progress_bar)
        reranked: Run = {qid: [] for qid in run}
        for (qid, docid), score in zip(owners, scores):
            reranked[qid].append(Hit(docid, float(score)))
        for qid, hits in run.items():
            top = sort_hits(reranked[qid])
            floor = min((h.score for h in top), default=0.0)
            rest = [Hit(h.docid, floor - 1.0 - i) for i, h in enumerate(sort_hits(hits)[self.depth:])]
            reranked[qid] = top + rest
        return reranked
