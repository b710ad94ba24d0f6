"""Sequence pooling: one place that turns (batch, length, dim) hidden states into (batch, dim), or, for
cross-encoders with ``pair`` pooling, into the query's and the document's (batch, 2, dim)."""
from __future__ import annotations

POOLINGS = ("last", "cls", "mean", "pair")


def pool(hidden, mask, strategy: str, token_type_ids=None):
    """Pool ``hidden`` (B, L, D) under ``mask`` (B, L) with 'last' (the last real token, wherever the pads are),
    'cls' (first), 'mean', or 'pair': the mean over the first segment (token type 0: ``[CLS] query [SEP]``) and over
    the second (the document), stacked (B, 2, D). Nothing here reads values back to the host, so GPU batches queue
    without waiting."""
    import torch

    if strategy == "last":
        last = (mask * torch.arange(mask.shape[1], device=mask.device)).argmax(dim=1)  # (B,)
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
