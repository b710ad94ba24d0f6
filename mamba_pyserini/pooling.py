"""Sequence pooling: one place that turns (batch, length, dim) hidden states into (batch, dim)."""
from __future__ import annotations

POOLINGS = ("last", "cls", "mean")


def pool(hidden, mask, strategy: str):
    """Pool ``hidden`` (B, L, D) under ``mask`` (B, L) with 'last' (last real token), 'cls' (first) or 'mean'."""
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
    raise ValueError(f"unknown pooling {strategy!r}; choose one of {', '.join(POOLINGS)}")
