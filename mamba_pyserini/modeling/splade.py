"""SpladeEncoder: a learned sparse encoder (SPLADE) held by a plain masked-language-model checkpoint."""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from .backbone import resolve_checkpoint
from .base import resolve_device

MAX_BATCH = 32  # texts per forward pass: a batch's vocabulary-wide logits (texts x tokens x 30k) are its memory


class SpladeEncoder:
    """SPLADE's max pooling: a text's vector is, for every vocabulary term, the max over its tokens of
    log(1 + relu(MLM logit)); the score of a pair is the dot product of its query's and document's vectors (no
    prefixes). It runs in fp32, as SPLADE checkpoints are scored. ``encode_queries``/``encode_documents`` give sparse
    CSR matrices; ``predict(pairs)`` scores pairs, so a SPLADE model reranks and teaches like a bi-encoder."""

    KIND = "splade"

    def __init__(self, model, tokenizer, max_length: int = 512):
        self.model, self.tokenizer, self.max_length = model.eval(), tokenizer, max_length

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, max_length: int = 512) -> "SpladeEncoder":
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        path = resolve_checkpoint(name_or_path)
        return cls(AutoModelForMaskedLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path),
                   max_length)

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 32, device: str | None = None,
               show_progress_bar: bool = False) -> torch.Tensor:
        """Sparse float32 CSR vectors (N, vocabulary) on the CPU, in the input order (batches sorted by length)."""
        from tqdm import tqdm

        device = resolve_device(device)
        self.model.to(device)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        batch_size = min(batch_size, MAX_BATCH)
        out: list[torch.Tensor] = [None] * len(texts)
        for start in tqdm(range(0, len(texts), batch_size), desc="encode", unit="batch", disable=not show_progress_bar):
            idx = order[start:start + batch_size]
            batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt").to(device)
            logits = self.model(**batch).logits  # log(1 + relu(x)) is monotonic: take the max over tokens first
            logits = logits.masked_fill(~batch["attention_mask"].bool().unsqueeze(-1), float("-inf"))
            vectors = torch.log1p(torch.relu(logits.amax(dim=1).float())).cpu()
            for i, row in zip(idx, vectors):
                out[i] = row.to_sparse()
        width = self.model.config.vocab_size
        if not out:
            return torch.sparse_csr_tensor(torch.zeros(1, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                                           torch.zeros(0), size=(0, width))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
            return torch.stack(out).to_sparse_csr()

    def encode_queries(self, queries: list[str], **kwargs) -> torch.Tensor:
        return self.encode(queries, **kwargs)

    def encode_documents(self, documents: list[str], **kwargs) -> torch.Tensor:
        return self.encode(documents, **kwargs)

    def predict(self, pairs: list[tuple[str, str]], batch_size: int = 32, device: str | None = None,
                show_progress_bar: bool = False) -> np.ndarray:
        """The dot product of each (query, document) pair; each distinct text is encoded once."""
        queries = sorted({q for q, _ in pairs})
        docs = sorted({d for _, d in pairs})
        kwargs = {"batch_size": batch_size, "device": device, "show_progress_bar": show_progress_bar}
        scores = dot_products(self.encode_queries(queries, **kwargs), self.encode_documents(docs, **kwargs))
        q_rows, d_rows = {q: i for i, q in enumerate(queries)}, {d: i for i, d in enumerate(docs)}
        return np.array([scores[q_rows[q], d_rows[d]] for q, d in pairs], dtype=np.float32)


def rows(vectors: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """Rows ``start:end`` of a sparse CSR matrix (which has no slicing of its own)."""
    crow = vectors.crow_indices()
    first, last = int(crow[start]), int(crow[min(end, len(crow) - 1)])
    return torch.sparse_csr_tensor(crow[start:end + 1] - first, vectors.col_indices()[first:last],
                                   vectors.values()[first:last], size=(len(crow[start:end + 1]) - 1, vectors.shape[1]),
                                   check_invariants=False)


def dot_products(queries: torch.Tensor, documents: torch.Tensor) -> np.ndarray:
    """(Q, D) float32 dot products of sparse CSR query and document vectors."""
    return (documents @ queries.to_dense().T).T.contiguous().numpy()
