"""MambaBiEncoder: one tower (shared weights) for queries and documents -> pooled, optionally normalised vectors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..pooling import pool
from ..templates import encode_texts
from .base import ST_MODULES, RankingModel

ST_POOLING = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_lasttoken": "last"}


class MambaBiEncoder(RankingModel):
    """Encodes queries and documents into vectors whose dot product (cosine when ``normalize``) scores relevance.

    Wraps Mamba-1/Mamba-2 backbones (last-real-token or mean pooling) and transformer encoders, including
    sentence-transformers model directories (their pooling, normalisation and max length are read from them).
    ``predict(pairs)`` scores (query, document) pairs, so a bi-encoder also reranks.
    """

    KIND = "bi-encoder"

    @classmethod
    def plain_config(cls, path, backbone_config, overrides):
        st = _sentence_transformers_settings(Path(path)) if (Path(path) / ST_MODULES).is_file() else {}
        return super().plain_config(path, backbone_config, {**st, **overrides})

    @property
    def dimension(self) -> int:
        return self.backbone.config.hidden_size

    def forward(self, input_ids, attention_mask, token_type_ids=None, all_layers: bool = False, packing=None):
        """Vectors (B, D) for a right-padded or packed batch of texts (:meth:`batch`); with ``all_layers``, also
        every layer's hidden states."""
        out = self.hidden(input_ids, attention_mask, token_type_ids, all_layers=all_layers, packing=packing)
        hidden, layers = out if all_layers else (out, None)
        vectors = pool(hidden, attention_mask, self.config.pooling).float()
        vectors = torch.nn.functional.normalize(vectors, dim=-1) if self.config.normalize else vectors
        return (vectors, layers) if all_layers else vectors

    def tokenize(self, texts: list[str], is_query: bool) -> list[dict[str, list[int]]]:
        prefix = self.config.query_prefix if is_query else self.config.document_prefix
        return encode_texts(self.tokenizer, [prefix + t for t in texts], self.config.max_length, self.causal)

    def encode(self, texts: list[str], is_query: bool = False, batch_size: int = 32, device: str | None = None,
               show_progress_bar: bool = False) -> np.ndarray:
        """float32 vectors (N, D) of queries or documents, in length-sorted batches (bf16 where
        ``_kernels.inference_bf16`` says; see :meth:`run_sorted`)."""
        texts = list(texts)
        vectors = self.run_sorted(texts, lambda chunk: self.tokenize(chunk, is_query), batch_size, device, "encode",
                                  show_progress_bar)
        return vectors.reshape(len(texts), self.dimension)

    def encode_queries(self, queries: list[str], **kwargs) -> np.ndarray:
        return self.encode(queries, is_query=True, **kwargs)

    def encode_documents(self, documents: list[str], **kwargs) -> np.ndarray:
        return self.encode(documents, is_query=False, **kwargs)

    def predict(self, pairs: list[tuple[str, str]], batch_size: int = 32, device: str | None = None,
                show_progress_bar: bool = False) -> np.ndarray:
        """Similarity of each (query, document) pair; each distinct text is encoded once."""
        queries = sorted({q for q, _ in pairs})
        docs = sorted({d for _, d in pairs})
        kwargs = {"batch_size": batch_size, "device": device, "show_progress_bar": show_progress_bar}
        q_vecs = dict(zip(queries, self.encode_queries(queries, **kwargs)))
        d_vecs = dict(zip(docs, self.encode_documents(docs, **kwargs)))
        return np.array([q_vecs[q] @ d_vecs[d] for q, d in pairs], dtype=np.float32)


def _sentence_transformers_settings(path: Path) -> dict:
    """Pooling, normalisation, max length and query/document prompts (e5's ``query: `` and ``passage: ``) of a
    sentence-transformers directory (Transformer, Pooling and optional Normalize modules)."""
    modules = json.loads((path / ST_MODULES).read_text())
    settings = {"normalize": any(m["type"].endswith(".Normalize") for m in modules)}
    for module in modules:
        if module["type"].endswith(".Pooling"):
            pooling = json.loads((path / module["path"] / "config.json").read_text())
            modes = [name for key, name in ST_POOLING.items() if pooling.get(key)]
            if len(modes) != 1:
                raise ValueError(f"{path}: unsupported sentence-transformers pooling {pooling}")
            settings["pooling"] = modes[0]
    st_config = path / "sentence_bert_config.json"
    if st_config.is_file():
        settings["max_length"] = json.loads(st_config.read_text()).get("max_seq_length", 512)
    prompts_file = path / "config_sentence_transformers.json"
    prompts = json.loads(prompts_file.read_text()).get("prompts") or {} if prompts_file.is_file() else {}
    for key, names in (("query_prefix", ("query",)), ("document_prefix", ("document", "passage", "corpus"))):
        found = [prompts[n] for n in names if prompts.get(n)]
        if found:
            settings[key] = found[0]
    return settings
