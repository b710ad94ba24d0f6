"""Stages over pandas DataFrames, for notebooks: each maps a table of rows to another, as PyTerrier's transformers.

Topics are ``(qid, query)`` rows; results add ``docid, score, rank`` (and ``text`` where the stage has it). Compose
with ``>>``::

    from mamba_pyserini.pipeline import Candidates, Rerank, evaluate, topics_frame
    pipeline = Candidates("dl19-passage") >> Rerank("sentence-transformers/all-MiniLM-L6-v2")
    results = pipeline(topics_frame("dl19"))
    evaluate(results, "dl19")                      # {"nDCG@10": 0.6424, ...}
    evaluate(results, "my-topics.tsv", qrels="my-qrels.txt")
"""
from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from .runs import Hit, Run, fuse, sort_hits

RESULT_COLUMNS = ["qid", "query", "docid", "score", "rank"]


def topics_frame(topics) -> pd.DataFrame:
    """``(qid, query)`` rows of a topic name/file (as ``search --topics``) or a ``{qid: query}`` mapping."""
    from .topics import load_topics

    queries = topics if isinstance(topics, Mapping) else load_topics(str(topics)).queries
    return pd.DataFrame({"qid": list(queries), "query": list(queries.values())})


def to_frame(run: Run, queries: Mapping[str, str], texts: Mapping[str, str] | None = None) -> pd.DataFrame:
    """A run as result rows, in Pyserini's order (rank 1 first)."""
    rows = [(qid, queries[qid], h.docid, h.score, rank) for qid, hits in run.items()
            for rank, h in enumerate(sort_hits(hits), 1)]
    frame = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    if texts is not None:
        frame["text"] = frame["docid"].map(texts)
    return frame


def to_run(frame: pd.DataFrame) -> tuple[Run, dict[str, str]]:
    """(run, queries) of result rows."""
    missing = set(RESULT_COLUMNS[:4]) - set(frame.columns)
    if missing:
        raise ValueError(f"result rows need columns {', '.join(sorted(missing))}")
    run: Run = {}
    for qid, docid, score in zip(frame["qid"].astype(str), frame["docid"].astype(str), frame["score"]):
        run.setdefault(qid, []).append(Hit(docid, float(score)))
    queries = dict(zip(frame["qid"].astype(str), frame["query"]))
    return {qid: sort_hits(hits) for qid, hits in run.items()}, queries


def _queries(frame: pd.DataFrame) -> dict[str, str]:
    return dict(zip(frame["qid"].astype(str), frame["query"]))


class Stage:
    """A DataFrame -> DataFrame step; ``a >> b`` runs ``a`` then ``b``."""

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        raise NotImplementedError

    def __rshift__(self, other: "Stage") -> "Stage":
        return Pipeline(self, other)


class Pipeline(Stage):
    def __init__(self, *stages: Stage):
        self.stages = stages

    def __call__(self, frame):
        for stage in self.stages:
            frame = stage(frame)
        return frame


class Retrieve(Stage):
    """Any first stage (a ``first_stage.Searcher``): each query's top ``k`` hits, with their texts where it has them."""

    def __init__(self, searcher, k: int = 1000):
        self.searcher, self.k = searcher, k

    def __call__(self, frame):
        queries = _queries(frame)
        return to_frame(self.searcher.search(queries, self.k), queries, self.searcher.texts)


class Candidates(Retrieve):
    """The bundled Pyserini BM25 (``bm25``) or BM25+RM3 (``bm25-rm3``) top-100 of a topic set, with text."""

    def __init__(self, topics: str, first_stage: str = "bm25"):
        from .first_stage import BundledCandidates
        from .topics import load_topics

        super().__init__(BundledCandidates(load_topics(topics).name, first_stage))


class Bm25(Retrieve):
    """BM25 (optionally + RM3) over a Lucene index or Pyserini prebuilt index, with explicit parameters."""

    def __init__(self, index: str, hits: int = 1000, threads: int = 1, **params):
        from .sparse import Bm25Searcher

        super().__init__(Bm25Searcher(index, threads=threads, **params), hits)


class Dense(Retrieve):
    """A bi-encoder's queries searching a FAISS index written by ``encode`` (Pyserini's FaissSearcher)."""

    def __init__(self, model, faiss_index: str, hits: int = 1000, device: str | None = None, batch_size: int = 64):
        from .dense import DenseSearcher
        from .modeling.auto import load_model

        model = load_model(model, kind="bi-encoder") if isinstance(model, (str, Path)) else model
        super().__init__(DenseSearcher(model, faiss_index, device, batch_size), hits)


class Fuse(Stage):
    """Runs two first stages on the same topics and fuses them (``rrf`` or ``interpolation``, as ``runs.fuse``)."""

    def __init__(self, sparse: Stage, dense: Stage, method: str = "rrf", k: int = 1000, alpha: float = 0.1):
        self.sparse, self.dense, self.method, self.k, self.alpha = sparse, dense, method, k, alpha

    def __call__(self, frame):
        (sparse, queries), (dense, _) = to_run(self.sparse(frame)), to_run(self.dense(frame))
        return to_frame(fuse(sparse, dense, self.method, self.k, alpha=self.alpha), queries)


class Rerank(Stage):
    """Rerank each query's top ``depth`` rows with a cross-encoder or bi-encoder (a model or checkpoint name); texts
    from the rows' ``text`` column, else ``texts`` (a mapping, or a source as ``rerank --index`` takes). A progress bar
    shows on stderr unless ``show_progress_bar=False``. Other settings go to :class:`MambaReranker`: ``weight`` below 1
    interpolates with the rows' scores (it reranks alone by default, since a stage does not know its first stage)."""

    def __init__(self, model, texts=None, depth: int = 100, show_progress_bar: bool = True, **kwargs):
        from .modeling.auto import load_model
        from .reranker import MambaReranker

        model = load_model(model) if isinstance(model, (str, Path)) else model
        self.reranker = MambaReranker(model, depth, show_progress_bar=show_progress_bar, **kwargs)
        self.texts = texts

    def __call__(self, frame):
        from .texts import read_texts

        run, queries = to_run(frame)
        if "text" in frame.columns:
            texts = dict(zip(frame["docid"].astype(str), frame["text"]))
        elif isinstance(self.texts, Mapping):
            texts = self.texts
        elif self.texts is not None:
            texts = read_texts(str(self.texts), {h.docid for hits in run.values() for h in hits[:self.reranker.depth]})
        else:
            raise ValueError("reranking needs texts: a 'text' column, or texts= (a mapping or a text source)")
        out = to_frame(self.reranker.rerank_run(queries, run, texts), queries)
        if "text" in frame.columns:
            out["text"] = out["docid"].map(texts)
        return out


def evaluate(frame: pd.DataFrame, topics: str, metrics=None, qrels: str | None = None,
             relevance_level: int | None = None) -> dict[str, float]:
    """trec_eval metrics (Pyserini's flags) of result rows against ``qrels`` (a file), else the qrels of ``topics``
    (a topic name); MAP and recall at ``relevance_level`` (as ``search --relevance-level``)."""
    from .evaluation import METRICS, evaluate_run
    from .runs import write_run
    from .topics import load_topics

    topic_set = load_topics(topics, qrels=qrels)
    if topic_set.qrels is None:
        raise ValueError(f"no qrels for {topic_set.name}: pass qrels= (a qrels file)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.txt"
        write_run(to_run(frame)[0], path, "pipeline")
        return evaluate_run(path, topic_set.qrels, metrics or tuple(METRICS), qrels_name=topic_set.name,
                            level=relevance_level)
