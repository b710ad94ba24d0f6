"""Metrics through Anserini's trec_eval (the binary Pyserini's ``trec_eval`` wraps), with Pyserini's flags."""
from __future__ import annotations

import os
import re
import subprocess

from ._java import anserini_jar, java

# name -> trec_eval flags, as Pyserini's 2CR pages compute them.
METRICS = {
    "nDCG@10": ["-c", "-m", "ndcg_cut.10"],
    "MRR@10": ["-c", "-M", "10", "-m", "recip_rank"],
    "MAP": ["-c", "-m", "map"],
    "R@100": ["-c", "-m", "recall.100"],
}
# Graded TREC DL passage judgements count grade >= 2 as relevant for MAP and recall (Pyserini: -l 2).
GRADED_PASSAGE = re.compile(r"(^|[.-])dl\d\d-passage([.-]|$)")
BINARY_CUTOFF_METRICS = ("MAP", "R@100")


def relevance_level(qrels_name: str | None = None, qrels: str | os.PathLike | None = None) -> int:
    """The lowest grade that MAP and recall count as relevant: 2 for TREC DL passage judgements (graded 0-3; Pyserini's
    ``-l 2``), recognised by the topic name (``dl19-passage``) or the qrels file name (``qrels.dl19-passage.txt``),
    else 1 (trec_eval's default)."""
    names = [qrels_name or "", os.path.basename(qrels or "")]
    return 2 if any(GRADED_PASSAGE.search(name) for name in names) else 1


def metric_flags(metric: str, level: int = 1) -> list[str]:
    """trec_eval flags for a metric name (or raw flags such as ``-c -m P.30``) at a relevance level."""
    flags = METRICS[metric] if metric in METRICS else metric.split()
    if level != 1 and metric in BINARY_CUTOFF_METRICS:
        flags = ["-l", str(level), *flags]
    return flags


def trec_eval(run: str | os.PathLike, qrels: str | os.PathLike, flags: list[str]) -> float:
    """One metric from trec_eval; raises when trec_eval fails or prints no 'all' line."""
    for path, what in ((run, "run"), (qrels, "qrels")):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{what} file not found: {path}")
    cmd = [java(), "-cp", anserini_jar(), "trec_eval", *flags, str(qrels), str(run)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "all" and parts[0] not in ("runid", "num_q"):
            return float(parts[2])
    message = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
    raise RuntimeError(f"trec_eval {' '.join(flags)} gave no metric for {run}: {message}")


def evaluate_run(run: str | os.PathLike, qrels: str | os.PathLike, metrics=tuple(METRICS),
                 qrels_name: str | None = None, level: int | None = None) -> dict[str, float]:
    """Metric name -> value for a TREC run file against a qrels file (checked first: trec_eval reads malformed qrels
    without a word), MAP and recall at relevance ``level`` (:func:`relevance_level` when None)."""
    from .runs import read_qrels

    read_qrels(qrels)
    level = relevance_level(qrels_name, qrels) if level is None else level
    return {m: trec_eval(run, qrels, metric_flags(m, level)) for m in metrics}
