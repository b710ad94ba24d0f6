"""MambaCrossEncoder: backbone + pooling + head -> one relevance score per (query, document) pair."""
from __future__ import annotations

import logging

import numpy as np
import torch.nn.functional as F
from torch import nn

from ..pooling import pool
from ..templates import encode_pairs
from .base import RankingModel

log = logging.getLogger("mamba_pyserini")


class MambaCrossEncoder(RankingModel):
    """A cross-encoder over a Mamba-1/Mamba-2 (or transformer) backbone: a linear head scores the pooled hidden state;
    with ``pair`` pooling the score is the cosine similarity of the query's and the document's mean states, read
    from the one sequence that holds both (so a bi-encoder's backbone starts as a cross-encoder that ranks).

    ``predict(pairs)`` and ``rank(query, docs)`` follow sentence-transformers' ``CrossEncoder``;
    ``save_pretrained``/``from_pretrained`` keep the head, template, pooling and max length with the weights.
    """

    KIND = "cross-encoder"

    def __init__(self, backbone: nn.Module, tokenizer, config):
        super().__init__(backbone, tokenizer, config)
        self.head = None if config.pooling == "pair" else nn.Linear(backbone.config.hidden_size, 1)

    @classmethod
    def plain_config(cls, path, backbone_config, overrides):
        config = super().plain_config(path, backbone_config, overrides)
        if config.pooling != "pair":
            log.warning("%s is a plain %s backbone without a ranking head: the head is randomly initialised, "
                        "so its scores mean nothing until it is trained", path, backbone_config.model_type)
        return config

    def forward(self, input_ids, attention_mask, token_type_ids=None, packing=None):
        """Scores (B,) for a right-padded or packed batch (:meth:`batch`)."""
        hidden = self.hidden(input_ids, attention_mask, token_type_ids, packing=packing)  # (B, L, D)
        types = self.token_types(token_type_ids, packing)
        pooled = pool(hidden, attention_mask, self.config.pooling, types)  # (B, D) or, pair, (B, 2, D)
        if self.head is None:
            return F.cosine_similarity(pooled[:, 0].float(), pooled[:, 1].float(), dim=-1)  # (B,)
        return self.head(pooled.to(self.head.weight.dtype)).squeeze(-1)  # (B,)

    def tokenize(self, queries: list[str], docs: list[str]) -> list[dict[str, list[int]]]:
        return encode_pairs(self.tokenizer, self.config.template, queries, docs, self.config.max_length)

    def predict(self, pairs: list[tuple[str, str]], batch_size: int = 32, device: str | None = None,
                show_progress_bar: bool = False) -> np.ndarray:
        """Scores of (query, document) pairs, computed in length-sorted batches (bf16 where
        ``_kernels.inference_bf16`` says; see :meth:`run_sorted`)."""
        return self.run_sorted(list(pairs), lambda chunk: self.tokenize([q for q, _ in chunk], [d for _, d in chunk]),
                               batch_size, device, "rerank", show_progress_bar)

    def rank(self, query: str, documents: list[str], top_k: int | None = None, batch_size: int = 32,
             return_documents: bool = False) -> list[dict]:
        """Documents sorted by score, as sentence-transformers' ``CrossEncoder.rank``: ``{corpus_id, score}``."""
        scores = self.predict([(query, d) for d in documents], batch_size=batch_size)
        order = sorted(range(len(documents)), key=lambda i: (-float(scores[i]), i))[:top_k]
        return [{"corpus_id": i, "score": float(scores[i]), **({"text": documents[i]} if return_documents else {})}
                for i in order]
