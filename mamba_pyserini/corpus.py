"""Document text for reranking: JSONL/TSV collections (Pyserini's JsonCollection/TsvCollection) or a Lucene index."""
from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path

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


def open_text(path: str | os.PathLike):
    return gzip.open(path, "rt", encoding="utf-8") if str(path).endswith(".gz") else open(path, encoding="utf-8")


def iter_collection(path: str | os.PathLike) -> Iterator[tuple[str, str]]:
    """(docid, text) pairs of a JSONL (``{"id", "contents"}``) or TSV (``id<TAB>text``) collection, checked line by line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"collection not found: {path}")
    fmt = collection_format(path)
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            if fmt == "jsonl":
                try:
                    doc = json.loads(line)
                    yield str(doc["id"]), str(doc["contents"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise ValueError(f"{path}:{lineno}: malformed collection line: expected a JSON object "
                                     'with "id" and "contents"') from None
            else:
                docid, sep, text = line.rstrip("\n").partition("\t")
                if not sep or not docid.strip():
                    raise ValueError(f"{path}:{lineno}: malformed collection line: expected 'docid<TAB>text'")
                yield docid, text


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


def read_texts(source: str, docids: set[str]) -> dict[str, str]:
    """Texts of ``docids`` from a collection file, a FAISS index directory written by ``encode`` (its corpus), a Lucene
    index directory, or a Pyserini prebuilt index name."""
    if os.path.isfile(source):
        return read_collection(source, docids)
    from .dense import META_FILE

    encoder_info = Path(source) / META_FILE
    if encoder_info.is_file():
        corpus = json.loads(encoder_info.read_text()).get("corpus")
        if not corpus or not os.path.isfile(corpus):
            raise FileNotFoundError(f"{source}: the corpus it was encoded from ({corpus}) is not there")
        return read_collection(corpus, docids)
    from .sparse import open_searcher

    return lucene_texts(open_searcher(source), docids, source)
