"""Training groups: a query with positive and negative passages (and optional teacher scores), read from
MS MARCO-style triples or FlagEmbedding JSONL, mined from a run, and sampled into fixed-size groups."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
from collections.abc import Mapping

from .._io import atomic_write, read_lines
from ..corpus import JSONL_SUFFIXES, read_collection


@dataclasses.dataclass
class Group:
    query: str
    positives: list[str]
    negatives: list[str]
    positive_scores: list[float] | None = None  # a teacher's scores, for distillation
    negative_scores: list[float] | None = None

    @property
    def has_scores(self) -> bool:
        return self.positive_scores is not None and self.negative_scores is not None


def read_groups(path: str | os.PathLike, collection: str | None = None,
                queries: str | Mapping[str, str] | None = None) -> list[Group]:
    """Groups from FlagEmbedding JSONL (``{"query", "pos": [...], "neg": [...]}`` with optional ``pos_scores`` and
    ``neg_scores``), or from TSV triples: ``query \\t positive \\t negative ...`` texts, or, given ``collection`` and
    ``queries`` (a file, or qid -> query text), ``qid \\t pos_pid \\t neg_pid ...`` ids. Triples of one query merge
    into one group."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"training file not found: {path}")
    if (collection is None) != (queries is None):
        raise ValueError("id triples need both a collection and a queries file")
    if str(path).lower().endswith(JSONL_SUFFIXES):
        groups = _read_jsonl(path)
    else:
        groups = _read_triples(path, collection, queries)
    if not groups:
        raise ValueError(f"{path} has no training groups")
    return groups


def _read_jsonl(path) -> list[Group]:
    groups = []
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
            group = Group(row["query"], row["pos"], row["neg"], row.get("pos_scores"), row.get("neg_scores"))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise ValueError(f'{where}: malformed group: expected a JSON object with "query", "pos" and '
                             '"neg" lists') from None
        groups.append(_checked(_typed(group, where), where))
    return groups


def _typed(group: Group, where: str) -> Group:
    """A JSON group whose fields have the right types: a query string, lists of strings, lists of numbers."""
    def texts(value, name):
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            raise ValueError(f'{where}: "{name}" must be a list of strings')
        return value

    def numbers(value, name):
        if value is not None and (not isinstance(value, list) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in value)):
            raise ValueError(f'{where}: "{name}" must be a list of finite numbers')
        return value

    if not isinstance(group.query, str):
        raise ValueError(f'{where}: "query" must be a string')
    return Group(group.query, texts(group.positives, "pos"), texts(group.negatives, "neg"),
                 numbers(group.positive_scores, "pos_scores"), numbers(group.negative_scores, "neg_scores"))


def _read_triples(path, collection, queries) -> list[Group]:
    passages = read_collection(collection) if collection else None
    from_file = isinstance(queries, (str, os.PathLike))
    query_texts, query_source = (read_collection(queries), queries) if from_file else (queries, "the queries")
    merged: dict[str, Group] = {}
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        fields = line.split("\t")
        if len(fields) < 3:
            raise ValueError(f"{where}: malformed triple: expected 'query<TAB>positive<TAB>negative...' "
                             f"(or ids), found {len(fields)} field(s)")
        if passages is not None:
            fields = [_lookup(query_texts, fields[0], "query id", query_source, where)] + \
                     [_lookup(passages, pid, "passage id", collection, where) for pid in fields[1:]]
        query, positive, negatives = fields[0], fields[1], fields[2:]
        group = merged.setdefault(query, Group(query, [], []))
        group.positives += [positive] if positive not in group.positives else []
        group.negatives += [n for n in negatives if n not in group.negatives]
        _checked(group, where)
    return list(merged.values())


def _lookup(texts: Mapping[str, str], key: str, what: str, source, where: str) -> str:
    if key not in texts:
        raise ValueError(f"{where}: {what} {key!r} is not in {source}")
    return texts[key]


def _checked(group: Group, where: str) -> Group:
    if not group.query.strip():
        raise ValueError(f"{where}: empty query")
    if not group.positives:
        raise ValueError(f"{where}: group for query {group.query[:60]!r} has no positive")
    if not group.negatives:
        raise ValueError(f"{where}: group for query {group.query[:60]!r} has no negatives")
    if (group.positive_scores is None) != (group.negative_scores is None) or (group.has_scores and (
            len(group.positive_scores) != len(group.positives) or len(group.negative_scores) != len(group.negatives))):
        raise ValueError(f"{where}: teacher scores must come for every positive and negative")
    return group


def sample_group(group: Group, size: int, rng: random.Random) -> tuple[list[str], list[float] | None]:
    """One positive then ``size - 1`` negatives (with replacement only when there are too few), and their teacher
    scores when the group has them."""
    p = rng.randrange(len(group.positives))
    k = size - 1
    picks = rng.sample(range(len(group.negatives)), k) if len(group.negatives) >= k else \
        [rng.randrange(len(group.negatives)) for _ in range(k)]
    texts = [group.positives[p]] + [group.negatives[i] for i in picks]
    if not group.has_scores:
        return texts, None
    return texts, [float(group.positive_scores[p])] + [float(group.negative_scores[i]) for i in picks]


def group_order(n_groups: int, seed: int, start: int, count: int) -> list[int]:
    """Group indices at stream positions ``start .. start+count``: each epoch is a fresh seeded permutation, so any
    position (and a resumed run) is determined by the seed alone."""
    out, position = [], start
    while len(out) < count:
        epoch, offset = divmod(position, n_groups)
        perm = list(range(n_groups))
        random.Random(seed * 1_000_003 + epoch).shuffle(perm)
        take = perm[offset:offset + count - len(out)]
        out += take
        position += len(take)
    return out


def mine_negatives(run, qrels: Mapping[str, Mapping[str, int]], n: int, seed: int = 42) -> list[list[str]]:
    """Hard negatives from a first-stage run: for each judged query, ``[qid, pos_pid, neg_pid ...]`` rows with up to
    ``n`` negatives sampled (seeded) from the non-relevant hits ranked below its best-ranked positive."""
    rows = []
    for qid, hits in run.items():
        positives = sorted(d for d, rel in qrels.get(qid, {}).items() if rel > 0)
        if not positives:
            continue
        docids = [h.docid for h in hits]
        first = min((docids.index(p) for p in positives if p in docids), default=-1)
        pool = [d for d in docids[first + 1:] if d not in positives]
        if not pool:
            continue
        negatives = random.Random(f"{seed}:{qid}").sample(pool, min(n, len(pool)))
        rows += [[qid, p, *negatives] for p in positives]
    if not rows:
        raise ValueError("no query of the run has both a judged positive and a negative below it")
    return rows


def write_rows(rows: list[list[str]], path: str | os.PathLike) -> None:
    with atomic_write(path) as f:
        f.writelines("\t".join(row) + "\n" for row in rows)


def write_groups(groups: list[Group], path: str | os.PathLike) -> None:
    """FlagEmbedding JSONL (with teacher scores when the groups have them)."""
    with atomic_write(path) as f:
        for g in groups:
            row = {"query": g.query, "pos": g.positives, "neg": g.negatives}
            if g.has_scores:
                row.update(pos_scores=g.positive_scores, neg_scores=g.negative_scores)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
