"""Sequence pooling: one place that turns (batch, length, dim) hidden states into (batch, dim), or, for
cross-encoders with ``pair`` pooling, into the query's and the document's (batch, 2, dim)."""
from __future__ import annotations

POOLINGS = ("last", "cls", "mean", "pair")


def pool(hidden, mask, strategy: str, token_type_ids=None):
    """Pool ``hidden`` (B, L, D) under ``mask`` (B, L) with 'last' (last real token), 'cls' (first), 'mean', or
    'pair': the mean over the first segment (token type 0: ``[CLS] query [SEP]``) and over the second (the
    document), stacked (B, 2, D)."""
    import torch

    if strategy == "last":
        if (mask[:, 1:] > mask[:, :-1]).any():
            raise ValueError("'last' pooling needs right padding: pads must follow the real tokens")
        last = mask.sum(dim=1) - 1  # (B,)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if strategy == "cls":
        return hidden[:, 0]
    if strategy == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
    if strategy == "pair":
        if token_type_ids is None:
            raise ValueError("'pair' pooling needs token type ids (the query-document template of an encoder)")
        second = token_type_ids.bool() & mask.bool()
        return torch.stack([pool(hidden, mask.bool() & ~second, "mean"), pool(hidden, second, "mean")], dim=1)
    raise ValueError(f"unknown pooling {strategy!r}; choose one of {', '.join(POOLINGS)}")
