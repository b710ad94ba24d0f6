"""Topics and qrels by Pyserini's names (offline from ``collections/`` first) or from files in Anserini's formats."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

COLLECTIONS = Path(os.environ.get("MAMBA_PYSERINI_COLLECTIONS", Path(__file__).resolve().parent.parent / "collections"))
TOPICS_DIR = COLLECTIONS / "topics-and-qrels"

ALIASES = {"dl19": "dl19-passage", "dl20": "dl20-passage"}

# Pyserini topic key -> (topics file, Anserini topic reader, qrels file), all shipped in collections/topics-and-qrels.
BUNDLED = {
    "dl19-passage": ("topics.dl19-passage.txt", "TsvInt", "qrels.dl19-passage.txt"),
    "dl20-passage": ("topics.dl20.txt", "TsvInt", "qrels.dl20-passage.txt"),
    "dl19-doc": ("topics.dl19-doc.txt", "TsvInt", "qrels.dl19-doc.txt"),
    "dl20-doc": ("topics.dl20.txt", "TsvInt", "qrels.dl20-doc.txt"),
    "msmarco-passage-dev-subset": (
        "topics.msmarco-passage.dev-subset.txt", "TsvInt", "qrels.msmarco-passage.dev-subset.txt"),
    "msmarco-doc-dev": ("topics.msmarco-doc.dev.txt", "TsvInt", "qrels.msmarco-doc.dev.txt"),
    "cacm": ("topics.cacm.txt", "Cacm", "qrels.cacm.txt"),
}

# Anserini's short reader names, as its SearchCollection -topicReader takes them.
READERS = ("TsvInt", "TsvString", "Trec", "Cacm", "JsonString")


@dataclasses.dataclass(frozen=True)
class Topics:
    """A topic set: ``queries`` maps qid -> query text in file order; ``qrels`` is a qrels file path or None."""

    name: str
    queries: dict[str, str]
    qrels: str | None = None


def known_names() -> list[str]:
    return sorted(BUNDLED) + sorted(ALIASES)


def canonical_name(name: str) -> str:
    return ALIASES.get(name, name)


def guess_reader(path: str | os.PathLike) -> str:
    """The Anserini topic reader for a file, from its first non-blank line."""
    with open(path, encoding="utf-8", errors="replace") as f:
        first = next((line.strip() for line in f if line.strip()), "")
    if first.startswith("<top>"):
        return "Trec"
    if first.startswith("<DOC>"):
        return "Cacm"
    if first.startswith("{"):
        return "JsonString"
    return "TsvString"


def read_topic_file(path: str | os.PathLike, reader: str | None = None) -> dict[str, str]:
    """Read a topic file with Anserini's own reader (as SearchCollection does); returns qid -> title."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"topic file not found: {path}")
    reader = reader or guess_reader(path)
    if reader not in READERS:
        raise ValueError(f"unknown topic reader {reader!r}; choose one of {', '.join(READERS)}")
    if reader.startswith("Tsv"):
        _check_tsv(path)
    from ._java import autoclass

    jreader = autoclass("io.anserini.search.topicreader.TopicReader")
    try:
        topics = jreader.getTopicsWithStringIdsFromFileWithTopicReaderClass(
            f"io.anserini.search.topicreader.{reader}TopicReader", path)
    except Exception as e:  # jnius.JavaException
        raise ValueError(f"cannot read topic file {path} with Anserini's {reader} reader: "
                         f"{str(e).splitlines()[0]}") from None
    if topics is None or topics.isEmpty():
        raise ValueError(f"no topics in {path} (read with Anserini's {reader} reader)")
    queries = {str(qid): topics.get(qid).get("title") or "" for qid in topics.keySet().toArray()}
    return _checked(queries, path)


def _check_tsv(path: str) -> None:
    """Name the line Anserini's TSV readers would trip over (they give up on the whole file)."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            qid, sep, query = line.rstrip("\n").partition("\t")
            if not sep or not qid.strip():
                raise ValueError(f"{path}:{lineno}: malformed topic line: expected 'qid<TAB>query'")
            if not query.strip():
                raise ValueError(f"{path}:{lineno}: empty query for topic {qid}")


def _checked(queries: dict[str, str], where: str) -> dict[str, str]:
    """Queries in qid order (numeric where qids are numbers), none of them empty."""
    for qid, query in queries.items():
        if not query.strip():
            raise ValueError(f"empty query for topic {qid} in {where}")
    return {qid: queries[qid] for qid in sorted(queries, key=lambda q: (not q.isdigit(), q.zfill(20)))}


def load_topics(spec: str, reader: str | None = None, qrels: str | None = None) -> Topics:
    """Topics by Pyserini name or alias (``dl19``), or by file path; bundled files are used before any download."""
    if qrels is not None and not os.path.isfile(qrels):
        raise FileNotFoundError(f"qrels file not found: {qrels}")
    if os.path.exists(spec):
        return Topics(Path(spec).name, read_topic_file(spec, reader), qrels)
    name = canonical_name(spec)
    if name in BUNDLED:
        topics_file, default_reader, qrels_file = BUNDLED[name]
        queries = read_topic_file(TOPICS_DIR / topics_file, reader or default_reader)
        return Topics(name, queries, qrels or str(TOPICS_DIR / qrels_file))
    return _pyserini_topics(name, qrels)


def _pyserini_topics(name: str, qrels: str | None) -> Topics:
    """Any other topic set Pyserini knows; Anserini downloads it, so this needs a network."""
    from ._java import boot_jvm

    boot_jvm()
    from pyserini.search import _base

    if name not in _base.topics_mapping:
        raise ValueError(f"unknown topics {name!r}: not a file and not a topic name; bundled names: "
                         f"{', '.join(known_names())} (or any Pyserini topic key on a connected machine)")
    try:
        raw = _base.get_topics(name)
        if qrels is None and name in _base.qrels_mapping:
            qrels = _base.get_qrels_file(name)
    except Exception as e:
        raise ValueError(f"cannot fetch topics {name!r} through Pyserini (offline?): "
                         f"{str(e).splitlines()[0]}") from None
    queries = {str(qid): fields.get("title", "") for qid, fields in raw.items()}
    return Topics(name, _checked(queries, name), qrels)
