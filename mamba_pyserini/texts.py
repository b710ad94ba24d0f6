"""Texts of a run's documents, from whichever source holds them."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .corpus import lucene_texts, read_collection
from .dense import META_FILE
from .sparse import open_searcher


def read_texts(source: str, docids: set[str]) -> dict[str, str]:
    """Texts of ``docids`` from a collection file, a FAISS index directory written by ``encode`` (its corpus), a Lucene
    index directory, or a Pyserini prebuilt index name."""
    if os.path.isfile(source):
        return read_collection(source, docids)
    encoder_info = Path(source) / META_FILE
    if encoder_info.is_file():
        corpus = json.loads(encoder_info.read_text()).get("corpus")
        if not corpus or not os.path.isfile(corpus):
            raise FileNotFoundError(f"{source}: the corpus it was encoded from ({corpus}) is not there")
        return read_collection(corpus, docids)
    return lucene_texts(open_searcher(source), docids, source)
