"""The one place that knows which Pyserini is installed: 1.6 (Python 3.11, Anserini 1.x) or 2.x (Python >= 3.12,
Anserini 2.x). Everything else calls these functions, never Pyserini's or Anserini's version-dependent API directly.
"""
from __future__ import annotations

import email.message
import functools
import importlib
import importlib.metadata
import io
import json
import sys
import urllib.error
import urllib.request
import urllib.response

from ._java import autoclass, boot_jvm

# Pyserini 2.x's catalogue of prebuilt indexes, which it downloads, and the entries it looks up while being imported
# (aliases in pyserini/prebuilt_index_info.py): without a network, ``import pyserini.search`` fails on them.
CATALOGUE = "https://raw.githubusercontent.com/castorini/prebuilt-indexes/"
IMPORT_TIME_ENTRIES = {"lucene/msmarco-v1-passage-impact.json": "msmarco-v1-passage.unicoil",
                       "lucene/msmarco-v2-passage-impact.json": "msmarco-v2-passage.unicoil-0shot"}


@functools.cache
def pyserini_major() -> int:
    """The installed Pyserini's major version (1 or 2)."""
    return int(importlib.metadata.version("pyserini").split(".")[0])


class _OfflineCatalogue(urllib.request.HTTPSHandler):
    """HTTPS as usual; where Pyserini's catalogue is unreachable, an empty one (holding only the entries Pyserini's
    import looks up, without download addresses), so that Pyserini works offline on local indexes."""

    def https_open(self, req):
        try:
            return super().https_open(req)
        except urllib.error.URLError:
            if not req.full_url.startswith(CATALOGUE):
                raise
            names = [name for path, name in IMPORT_TIME_ENTRIES.items() if req.full_url.endswith(path)]
            body = json.dumps([{"name": name, "description": "unavailable offline", "filename": "", "urls": [],
                                "md5": "", "size": 0} for name in names]).encode()
            response = urllib.response.addinfourl(io.BytesIO(body), email.message.Message(), req.full_url, 200)
            response.msg = "OK"
            return response


def pyserini_module(name: str):
    """``importlib.import_module(name)`` for a Pyserini module, with the JVM started first (ours: see ``_java``) and,
    on Pyserini 2.x, its catalogue of prebuilt indexes imported so that a missing network does not fail the import."""
    boot_jvm()
    if pyserini_major() >= 2 and "pyserini.prebuilt_index_info" not in sys.modules:
        previous = urllib.request._opener  # restored after the import
        urllib.request.install_opener(urllib.request.build_opener(_OfflineCatalogue))
        try:
            importlib.import_module("pyserini.prebuilt_index_info")
        finally:
            urllib.request.install_opener(previous)
    return importlib.import_module(name)


def prebuilt_lucene_searcher(name: str):
    """Pyserini's ``LuceneSearcher`` over a prebuilt index by name, downloaded; ValueError when the name is unknown or
    the download fails."""
    catalogue = pyserini_module("pyserini.prebuilt_index_info").TF_INDEX_INFO
    try:
        known = name in catalogue
    except OSError:  # Pyserini 2.x downloads the catalogue itself
        raise ValueError(f"unknown index {name!r}: not a directory, and Pyserini's list of prebuilt indexes cannot be "
                         "fetched (offline?)") from None
    if not known:
        raise ValueError(f"unknown index {name!r}: neither a directory nor a Pyserini prebuilt index name")
    searcher = pyserini_module("pyserini.search.lucene").LuceneSearcher
    try:
        return searcher.from_prebuilt_index(name, verbose=False)
    except Exception as e:
        raise ValueError(f"cannot download prebuilt index {name!r} (offline?): {str(e).splitlines()[0]}") from None


def read_topics(path: str, reader: str) -> dict[str, dict[str, str]]:
    """qid -> fields of a topic file read by Anserini's ``{reader}TopicReader``, as SearchCollection reads it.

    The reader class is built directly: ``TopicReader.getTopicsWithStringIdsFromFileWithTopicReaderClass`` swapped its
    two arguments in Anserini 2 and answers null to the old order.
    """
    paths = autoclass("java.nio.file.Paths")
    jreader = autoclass(f"io.anserini.search.topicreader.{reader}TopicReader")(paths.get(path))
    topics = jreader.read()
    # entrySet, not get(qid): an id does not always survive the trip through Python
    return {str(entry.getKey()): {field.getKey(): field.getValue() for field in entry.getValue().entrySet().toArray()
                                  if field.getValue() is not None}
            for entry in topics.entrySet().toArray()}


def pyserini_topics(name: str, with_qrels: bool = True) -> tuple[dict[str, str], str | None] | None:
    """A topic set Pyserini knows by name, downloaded (so online only): qid -> title and, ``with_qrels``, its qrels
    file (or None); None when Pyserini does not know the name, or (2.x, which downloads its list of names too) cannot
    tell offline. Raises ValueError when the download fails."""
    _base = pyserini_module("pyserini.search._base")
    try:
        if pyserini_major() >= 2:
            known, qrels_known = _base._get_topics_mapping(), _base._get_qrels_mapping()
        else:
            known, qrels_known = _base.topics_mapping, _base.qrels_mapping
    except OSError:
        return None
    if name not in known:
        return None
    try:
        raw = _base.get_topics(name)
        qrels = _base.get_qrels_file(name) if with_qrels and name in qrels_known else None
    except Exception as e:
        raise ValueError(f"cannot fetch topics {name!r} through Pyserini (offline?): "
                         f"{str(e).splitlines()[0]}") from None
    return {str(qid): fields.get("title", "") for qid, fields in raw.items()}, qrels
