"""Teachers and teacher ensembles: scores standardised per query and summed with weights (an ensemble ranks above
each of its members), mapped back onto the first teacher's scale so that a distillation temperature keeps its
meaning; the groups a teacher or an ensemble ranks over an unlabelled pool."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..modeling.splade import dot_products, rows
from .data import Group

BLOCK = 1024  # queries scored against the whole pool at a time


def combine(scores: list[np.ndarray], weights: list[float] | None = None) -> np.ndarray:
    """Per row, the weighted sum of each teacher's z-scores over the row, rescaled to the first teacher's mean and
    spread over that row. One teacher gives back its own scores."""
    weights = [1.0] * len(scores) if weights is None else list(weights)
    if len(weights) != len(scores):
        raise ValueError(f"{len(weights)} teacher weights for {len(scores)} teachers")
    if not scores:
        raise ValueError("an ensemble needs at least one teacher")
    if min(weights) < 0 or not sum(weights):
        raise ValueError(f"teacher weights must be non-negative and not all zero, not {weights}")
    arrays = [np.asarray(s, dtype=np.float64) for s in scores]
    if len(arrays) == 1:
        return arrays[0].astype(np.float32)

    def z(x):
        spread = x.std(axis=-1, keepdims=True)
        return (x - x.mean(axis=-1, keepdims=True)) / np.where(spread > 0, spread, 1.0)

    total = z(sum(w * z(s) for w, s in zip(weights, arrays)))
    first = arrays[0]
    return (total * first.std(axis=-1, keepdims=True) + first.mean(axis=-1, keepdims=True)).astype(np.float32)


def check_pool_teacher(teacher) -> None:
    """Only teachers that encode texts on their own (bi-encoders, SPLADE) can rank a whole pool."""
    kind = getattr(teacher, "KIND", "")
    if kind not in ("bi-encoder", "splade"):
        raise ValueError(f"a {kind or type(teacher).__name__} teacher cannot rank a whole pool (it scores pairs): "
                         "score given groups with `train score-teacher` instead")


def encode(teacher, texts: list[str], is_query: bool, batch_size: int, device: str | None):
    """A teacher's vectors of texts: dense (N, D) float32 for a bi-encoder, sparse CSR for SPLADE."""
    kwargs = {"batch_size": batch_size, "device": device, "show_progress_bar": True}
    vectors = teacher.encode_queries(texts, **kwargs) if is_query else teacher.encode_documents(texts, **kwargs)
    return vectors if isinstance(vectors, torch.Tensor) else torch.from_numpy(vectors)


def similarities(queries: torch.Tensor, passages: torch.Tensor, start: int, end: int) -> np.ndarray:
    """(end - start, P) float32 dot products of queries ``start:end`` with every passage, dense or sparse CSR."""
    if passages.layout == torch.sparse_csr:
        return dot_products(rows(queries, start, end), passages)
    return (queries[start:end] @ passages.T).numpy()


def ensemble_groups(teachers: list, weights: list[float] | None, queries: list[str], passages: list[str],
                    depth: int = 20, n_random: int = 10, seed: int = 42, batch_size: int = 256,
                    device: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For every query, the ensemble's top ``depth`` passages of the pool (best first) and ``n_random`` random
    others: (Q, depth + n_random) passage indices and the ensemble's scores of them (:func:`combine` over the whole
    pool, so on the first teacher's scale)."""
    if depth < 2 or len(passages) < depth + n_random:
        raise ValueError(f"need depth >= 2 and a pool of at least depth + random = {depth + n_random} passages")
    for teacher in teachers:  # before any of them encodes the pool
        check_pool_teacher(teacher)
    vectors = [(encode(t, queries, True, batch_size, device), encode(t, passages, False, batch_size, device))
               for t in teachers]
    rng = np.random.default_rng(seed)
    indices = np.empty((len(queries), depth + n_random), dtype=np.int64)
    scores = np.empty(indices.shape, dtype=np.float32)
    for start in range(0, len(queries), BLOCK):
        block = combine([similarities(q, p, start, start + BLOCK) for q, p in vectors], weights)
        top = np.argpartition(-block, depth - 1, axis=1)[:, :depth]  # the top ``depth``, then in order
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(block, top, 1), axis=1, kind="stable"), 1)
        for row, (best, values) in enumerate(zip(top, block)):  # random passages outside the row's top ``depth``
            taken = set(best.tolist())
            picks = [i for i in rng.choice(len(passages), n_random + depth, replace=False).tolist() if i not in taken]
            indices[start + row] = np.concatenate([best, picks[:n_random]])
            scores[start + row] = values[indices[start + row]]
    return indices, scores


def to_groups(queries: list[str], passages: list[str], indices: np.ndarray, scores: np.ndarray) -> list[Group]:
    """Groups whose 'positive' is the teacher's best passage and whose negatives are the rest, with its scores (the
    distillation losses only use the scores; MarginMSE takes margins from the best one)."""
    return [Group(query, [passages[row[0]]], [passages[i] for i in row[1:]], [float(s[0])], s[1:].tolist())
            for query, row, s in zip(queries, indices, scores)]


def score_groups(teachers: list, weights: list[float] | None, groups: list[Group], batch_size: int = 64,
                 device: str | None = None) -> list[Group]:
    """The groups with the ensemble's scores (each teacher's ``predict``, then :func:`combine` per group) for every
    positive and negative."""
    pairs = [(g.query, p) for g in groups for p in g.positives + g.negatives]
    each = [t.predict(pairs, batch_size=batch_size, device=device, show_progress_bar=True) for t in teachers]
    out, at = [], 0
    for g in groups:
        n = len(g.positives) + len(g.negatives)
        row = combine([s[at:at + n][None] for s in each], weights)[0].tolist()
        out.append(dataclasses.replace(g, positive_scores=row[:len(g.positives)],
                                       negative_scores=row[len(g.positives):]))
        at += n
    return out
