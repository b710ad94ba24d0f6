"""Dense retrieval: FAISS indexes in Pyserini's layout (``index`` + ``docid``) built with a MambaBiEncoder, sharded
encoding, and the query encoder through which Pyserini's own ``FaissSearcher`` searches them."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ._io import atomic_dir, atomic_write
from .first_stage import batch_search
from .runs import Run

INDEX_FILE, DOCID_FILE, META_FILE = "index", "docid", "encoder.json"


def read_faiss_index(path: str | os.PathLike):
    """(faiss index, docids) of a Pyserini-layout FAISS index directory; an error when it is not one or its docid
    file and vectors disagree."""
    import faiss

    path = Path(path)
    for name in (INDEX_FILE, DOCID_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path} is not a FAISS index directory: no {name} file")
    index = faiss.read_index(str(path / INDEX_FILE))
    docids = (path / DOCID_FILE).read_text(encoding="utf-8").splitlines()
    if len(docids) != index.ntotal:
        raise ValueError(f"{path}: the docid file lists {len(docids)} documents but the index holds {index.ntotal} "
                         "vectors")
    return index, docids


def write_faiss_index(vectors: np.ndarray, docids: list[str], output: str | os.PathLike, hnsw_m: int | None = None,
                      ef_construction: int = 200, meta: dict | None = None, overwrite: bool = False) -> str:
    """Write ``vectors`` (inner product) as ``output/index`` + ``output/docid`` (+ ``encoder.json``): flat by default,
    HNSW with ``hnsw_m`` links per node. Built beside ``output`` and renamed into place."""
    import faiss

    if len(vectors) != len(docids):
        raise ValueError(f"{len(docids)} docids for {len(vectors)} vectors")
    if any(not d or any(c.isspace() for c in d) for d in docids):
        raise ValueError("docids must be non-empty and contain no white space")
    dim = vectors.shape[1]
    if hnsw_m:
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
    else:
        index = faiss.IndexFlatIP(dim)
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    with atomic_dir(output, overwrite) as built:
        faiss.write_index(index, str(built / INDEX_FILE))
        (built / DOCID_FILE).write_text("".join(d + "\n" for d in docids), encoding="utf-8")
        kind = {"type": "hnsw", "m": hnsw_m, "ef_construction": ef_construction} if hnsw_m else {"type": "flat"}
        with atomic_write(built / META_FILE) as f:
            json.dump({**(meta or {}), "documents": len(docids), "dimension": dim, "faiss": kind}, f, indent=2)
    return str(output)


def shard_dir(output: str | os.PathLike, shard_id: int, shard_num: int) -> Path:
    return Path(output) / f"shard-{shard_id:03d}-of-{shard_num:03d}"


def encode_corpus(model, corpus: str | os.PathLike, output: str | os.PathLike, batch_size: int = 64,
                  device: str | None = None, hnsw_m: int | None = None, shard_id: int = 0, shard_num: int = 1,
                  overwrite: bool = False, show_progress_bar: bool = False) -> str:
    """Encode a JSONL/TSV collection with a bi-encoder into a FAISS index directory. With ``shard_num`` > 1, encode
    only the ``shard_id``-th contiguous slice, as a flat index in ``output/shard-III-of-NNN`` (see
    :func:`merge_shards`). Returns the directory written."""
    from .corpus import iter_collection

    if not 0 <= shard_id < shard_num:
        raise ValueError(f"shard id {shard_id} is not in 0..{shard_num - 1}")
    target = shard_dir(output, shard_id, shard_num) if shard_num > 1 else Path(output)
    if target.exists() and not overwrite:
        raise ValueError(f"{target} already exists (use --overwrite to replace it)")
    docs = list(iter_collection(corpus))
    if not docs:
        raise ValueError(f"{corpus} has no documents")
    size = -(-len(docs) // shard_num)
    docs = docs[shard_id * size:(shard_id + 1) * size]
    vectors = model.encode_documents([text for _, text in docs], batch_size=batch_size, device=device,
                                     show_progress_bar=show_progress_bar)
    meta = {"corpus": str(Path(corpus).resolve()), "model": model.config.to_dict(), "shard": [shard_id, shard_num]}
    return write_faiss_index(vectors, [d for d, _ in docs], target, None if shard_num > 1 else hnsw_m, meta=meta,
                             overwrite=overwrite)


def merge_shards(output: str | os.PathLike, shard_num: int, hnsw_m: int | None = None) -> str:
    """Merge ``output/shard-*-of-NNN`` (in shard order) into one index at ``output`` and remove the shards."""
    import shutil

    shards = [shard_dir(output, i, shard_num) for i in range(shard_num)]
    missing = [str(s) for s in shards if not s.is_dir()]
    if missing:
        raise FileNotFoundError(f"missing shard(s): {', '.join(missing)}")
    vectors, docids = [], []
    for shard in shards:
        index, ids = read_faiss_index(shard)
        vectors.append(index.reconstruct_n(0, index.ntotal))
        docids += ids
    meta = json.loads((shards[-1] / META_FILE).read_text())
    meta["shard"] = [0, 1]
    output = Path(output)
    staged = output.with_name(output.name + ".merged")
    write_faiss_index(np.concatenate(vectors), docids, staged, hnsw_m, meta=meta, overwrite=True)
    for name in (INDEX_FILE, DOCID_FILE, META_FILE):
        os.replace(staged / name, output / name)
    staged.rmdir()
    for shard in shards:
        shutil.rmtree(shard)
    return str(output)


def query_encoder(model, batch_size: int = 64, device: str | None = None):
    """A ``pyserini.encode.QueryEncoder`` that encodes queries with ``model`` (a MambaBiEncoder), for Pyserini's
    ``FaissSearcher(index_dir, query_encoder(model))``."""
    from .pyserini_compat import pyserini_module

    QueryEncoder = pyserini_module("pyserini.encode").QueryEncoder

    class MambaQueryEncoder(QueryEncoder):
        def __init__(self, bi_encoder, batch_size: int = 64, device: str | None = None):
            super().__init__()
            self.model, self.batch_size, self.device, self.has_model = bi_encoder, batch_size, device, True

        def encode(self, query: str, **kwargs) -> np.ndarray:
            return self.encode_batch([query])[0]

        def encode_batch(self, queries: list[str]) -> np.ndarray:
            return self.model.encode_queries(list(queries), batch_size=self.batch_size, device=self.device)

    return MambaQueryEncoder(model, batch_size, device)


class DenseSearcher:
    """Pyserini's ``FaissSearcher`` over one of our indexes, with queries encoded by a MambaBiEncoder, searched in
    ``threads`` threads; a ``first_stage.Searcher`` whose run is named ``condition``."""

    texts = None  # a reranker reads them from a text source

    def __init__(self, model, index_dir: str | os.PathLike, device: str | None = None, batch_size: int = 64,
                 threads: int = 1, condition: str = "dense"):
        read_faiss_index(index_dir)  # a one-line error here, not FaissSearcher's assertion
        encoder = query_encoder(model, batch_size, device)
        from .pyserini_compat import pyserini_module

        FaissSearcher = pyserini_module("pyserini.search.faiss").FaissSearcher
        self.model, self.searcher = model, FaissSearcher(str(index_dir), encoder)
        self.threads, self.condition = threads, condition

    def search(self, queries: dict[str, str], k: int = 1000) -> Run:
        return batch_search(self.searcher, queries, k, self.threads)
