"""The bundled first stage: Pyserini's BM25 top-100 with passage text for the judged TREC DL queries."""
from __future__ import annotations

import gzip
import json

from ._paths import COLLECTIONS
from .runs import Hit, Run, sort_hits

CANDIDATES_DIR = COLLECTIONS / "candidates"
COLLECTION_NAME = "msmarco-v1-passage"


def bundled_candidates(topic_name: str, first_stage: str = "bm25") -> tuple[Run, dict[str, str]] | None:
    """(run, docid -> text) of a bundled first stage for a topic set, or None when none is bundled."""
    path = CANDIDATES_DIR / f"{first_stage}.{topic_name}.json.gz"
    if not path.is_file():
        return None
    run: Run = {}
    texts: dict[str, str] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for entry in json.load(f):
            for hit in entry["hits"]:
                run.setdefault(str(hit["qid"]), []).append(Hit(str(hit["docid"]), float(hit["score"])))
                texts[str(hit["docid"])] = hit["content"]
    return {qid: sort_hits(hits) for qid, hits in run.items()}, texts


def bundled_names(first_stage: str = "bm25") -> list[str]:
    files = CANDIDATES_DIR.glob(f"{first_stage}.*.json.gz")
    return sorted(p.name[len(first_stage) + 1:-len(".json.gz")] for p in files)
