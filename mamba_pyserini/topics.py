"""Topics and qrels by Pyserini's names (offline from ``collections/`` first) or from files in Anserini's formats."""
from __future__ import annotations

import codecs
import contextlib
import dataclasses
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from ._io import first_seen, read_lines
from ._paths import TOPICS_DIR

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
    first = next((line.strip() for _, line in read_lines(path) if line.strip()), "")
    if first.startswith("<top>"):
        return "Trec"
    if first.startswith("<DOC>"):
        return "Cacm"
    if first.startswith("{"):
        return "JsonString"
    return "TsvString"


def read_topic_file(path: str | os.PathLike, reader: str | None = None) -> dict[str, str]:
    """Read a topic file with Anserini's own reader (as SearchCollection does), after :func:`check_topic_file`;
    returns qid -> title."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"topic file not found: {path}")
    reader = reader or guess_reader(path)
    if reader not in READERS:
        raise ValueError(f"unknown topic reader {reader!r}; choose one of {', '.join(READERS)}")
    check_topic_file(path, reader)
    from .pyserini_compat import read_topics

    with _without_bom(path) as readable:
        try:
            topics = read_topics(readable, reader)
        except Exception as e:  # jnius.JavaException
            raise ValueError(f"cannot read topic file {path} with Anserini's {reader} reader: "
                             f"{str(e).splitlines()[0]}") from None
    if not topics:
        raise ValueError(f"no topics in {path} (read with Anserini's {reader} reader)")
    queries = {qid: fields.get("title") or "" for qid, fields in topics.items()}
    return _checked(queries, path)


TREC_NUM = re.compile(r"\s*<num>\s*(?:Number:)?\s*(\S+)")
CACM_DOCNO = re.compile(r"\s*<DOCNO>\s*(\S+)\s*</DOCNO>")


def check_topic_file(path: str, reader: str) -> None:
    """What Anserini's readers let through or give up on without saying where, named with its line: invalid UTF-8,
    a malformed TSV or JSON line, an empty TSV query and a topic id twice (Anserini keeps the last silently)."""
    seen: dict[str, int] = {}
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        qid = None
        if reader.startswith("Tsv"):
            qid, sep, query = line.partition("\t")
            if not sep or not qid.strip():
                raise ValueError(f"{path}:{lineno}: malformed topic line: expected 'qid<TAB>query'")
            if not query.strip():
                raise ValueError(f"{path}:{lineno}: empty query for topic {qid}")
        elif reader == "JsonString":
            qid = _json_topic_id(line, path, lineno)
        else:
            match = (TREC_NUM if reader == "Trec" else CACM_DOCNO).match(line)
            qid = match and match.group(1)
        if qid is not None:
            first_seen(seen, qid, lineno, path, "topic id")


def _json_topic_id(line: str, path: str, lineno: int) -> str:
    try:
        topic = json.loads(line)
        qid = topic["qid"]
        title = topic.get("title", "")
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise ValueError(f'{path}:{lineno}: malformed topic line: expected a JSON object with "qid" and '
                         '"title"') from None
    if isinstance(qid, bool) or not isinstance(qid, (str, int)) or not isinstance(title, str):
        raise ValueError(f'{path}:{lineno}: malformed topic line: "qid" must be a string (or integer) and "title" '
                         "a string")
    return str(qid)


@contextlib.contextmanager
def _without_bom(path: str):
    """``path``, or a copy without its UTF-8 byte-order mark (on which Anserini's readers give up)."""
    with open(path, "rb") as f:
        if f.read(len(codecs.BOM_UTF8)) != codecs.BOM_UTF8:
            yield path
            return
        with tempfile.TemporaryDirectory() as tmp:
            copy = os.path.join(tmp, os.path.basename(path))
            with open(copy, "wb") as out:
                shutil.copyfileobj(f, out)
            yield copy


def _checked(queries: dict[str, str], where: str) -> dict[str, str]:
    """Queries in qid order (numeric where qids are numbers), none of them empty."""
    for qid, query in queries.items():
        if not query.strip():
            raise ValueError(f"empty query for topic {qid} in {where}")
    return {qid: queries[qid] for qid in sorted(queries, key=lambda q: (not q.isdigit(), q.zfill(20)))}


def load_topics(spec: str, reader: str | None = None, qrels: str | None = None) -> Topics:
    """Topics by Pyserini name or alias (``dl19``), or by file path; bundled files are used before any download."""
    if qrels is not None:
        from .runs import read_qrels

        read_qrels(qrels)  # before any work: trec_eval would read a malformed file without a word
    if os.path.exists(spec):
        return Topics(Path(spec).name, read_topic_file(spec, reader), qrels)
    name = canonical_name(spec)
    if name in BUNDLED:
        topics_file, default_reader, qrels_file = BUNDLED[name]
        queries = read_topic_file(TOPICS_DIR / topics_file, reader or default_reader)
        return Topics(name, queries, qrels or str(TOPICS_DIR / qrels_file))
    return _pyserini_topics(name, qrels)


def _pyserini_topics(name: str, qrels: str | None) -> Topics:
    """Any other topic set Pyserini knows; it downloads them, so this needs a network."""
    from .pyserini_compat import pyserini_topics

    found = pyserini_topics(name, with_qrels=qrels is None)
    if found is None:
        raise ValueError(f"unknown topics {name!r}: not a file and not a topic name; bundled names: "
                         f"{', '.join(known_names())} (or any Pyserini topic key on a connected machine)")
    queries, known_qrels = found
    return Topics(name, _checked(queries, name), qrels or known_qrels)
