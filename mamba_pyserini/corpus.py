"""Document text for reranking: JSONL/TSV collections (Pyserini's JsonCollection/TsvCollection) or a Lucene index."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from ._io import first_seen, read_lines

JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
TSV_SUFFIXES = (".tsv", ".tsv.gz", ".txt", ".txt.gz")


def collection_format(path: str | os.PathLike) -> str:
    """'jsonl' or 'tsv', from the file name."""
    name = Path(path).name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(TSV_SUFFIXES):
        return "tsv"
    raise ValueError(f"{path}: unknown collection format; expected one of {', '.join(JSONL_SUFFIXES + TSV_SUFFIXES)}")


def iter_collection(path: str | os.PathLike) -> Iterator[tuple[str, str]]:
    """(docid, text) pairs of a JSONL (``{"id", "contents"}``, contents a string) or TSV (``id<TAB>text``) collection,
    checked line by line; an id twice is refused."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"collection not found: {path}")
    fmt = collection_format(path)
    seen: dict[str, int] = {}
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        if fmt == "jsonl":
            docid, text = _json_document(line, path, lineno)
        else:
            docid, sep, text = line.partition("\t")
            if not sep or not docid.strip():
                raise ValueError(f"{path}:{lineno}: malformed collection line: expected 'docid<TAB>text'")
        first_seen(seen, docid, lineno, path, "document id")
        yield docid, text


def _json_document(line: str, path, lineno: int) -> tuple[str, str]:
    try:
        doc = json.loads(line)
        docid, text = doc["id"], doc["contents"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"{path}:{lineno}: malformed collection line: expected a JSON object "
                         'with "id" and "contents"') from None
    if isinstance(docid, bool) or not isinstance(docid, (str, int)) or not isinstance(text, str):
        raise ValueError(f'{path}:{lineno}: malformed collection line: "id" must be a string (or integer) and '
                         f'"contents" a string, not {type(docid).__name__} and {type(text).__name__}')
    return str(docid), text


def read_collection(path: str | os.PathLike, docids: set[str] | None = None) -> dict[str, str]:
    """Texts of ``docids`` (all documents when None) from a collection file; every wanted docid must be there."""
    texts = {docid: text for docid, text in iter_collection(path) if docids is None or docid in docids}
    _check_complete(texts, docids, path)
    return texts


def _check_complete(texts: dict[str, str], docids: set[str] | None, source) -> None:
    missing = sorted(set(docids or ()) - texts.keys())
    if missing:
        raise ValueError(f"{len(missing)} docid(s) of the run are not in {source}, e.g. {missing[0]!r}")


def is_lucene_index(path: str | os.PathLike) -> bool:
    return os.path.isdir(path) and any(p.name.startswith("segments_") for p in Path(path).iterdir())


def lucene_texts(searcher, docids: set[str], source: str) -> dict[str, str]:
    """Stored text of ``docids`` from a Pyserini ``LuceneSearcher``: the contents field, else the raw field
    (a JSON document's ``contents``, or an HTML document's text as Anserini's Jsoup extracts it)."""
    from ._java import autoclass

    jsoup = None
    texts = {}
    for docid in docids:
        doc = searcher.doc(docid)
        if doc is None:
            continue
        text = doc.contents()
        if text is None:
            raw = doc.raw() or ""
            if raw.lstrip().startswith("{"):
                text = json.loads(raw).get("contents", "")
            elif raw.lstrip().startswith("<"):
                jsoup = jsoup or autoclass("org.jsoup.Jsoup")
                text = jsoup.parse(raw).text()
            else:
                text = raw
        texts[docid] = text
    _check_complete(texts, docids, source)
    return texts
