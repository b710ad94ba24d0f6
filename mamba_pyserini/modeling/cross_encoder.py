"""MambaCrossEncoder: backbone + pooling + linear head -> one relevance score per (query, document) pair."""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._io import atomic_write
from .._kernels import kernels_for
from ..config import CONFIG_KEY, MambaRankerConfig
from ..pooling import pool
from ..templates import encode_pairs
from .backbone import SAFETENSORS, build_backbone, load_backbone, load_backbone_config, max_positions

log = logging.getLogger("mamba_pyserini")


def resolve_device(device: str | None) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class MambaCrossEncoder(nn.Module):
    """A cross-encoder over a Mamba-1/Mamba-2 (or transformer) backbone, scoring the pooled hidden state.

    ``predict(pairs)`` and ``rank(query, docs)`` follow sentence-transformers' ``CrossEncoder``;
    ``save_pretrained``/``from_pretrained`` keep the head, template, pooling and max length with the weights.
    """

    def __init__(self, backbone: nn.Module, tokenizer, config: MambaRankerConfig):
        super().__init__()
        if config.kind != "cross-encoder":
            raise ValueError(f"a {config.kind} config cannot build a cross-encoder")
        limit = max_positions(backbone.config)
        if limit is not None and config.max_length > limit:
            raise ValueError(f"max length {config.max_length} exceeds the model's maximum of {limit} positions")
        self.backbone, self.tokenizer, self.config = backbone, tokenizer, config
        self.head = nn.Linear(backbone.config.hidden_size, 1)

    # -- construction and persistence ------------------------------------------------------------------------------
    @classmethod
    def from_backbone_config(cls, backbone_config, tokenizer, **overrides) -> "MambaCrossEncoder":
        """A randomly initialised cross-encoder (e.g. a tiny Mamba for tests, or a model to train from scratch)."""
        return cls(build_backbone(backbone_config), tokenizer, MambaRankerConfig.for_backbone(backbone_config, **overrides))

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **overrides) -> "MambaCrossEncoder":
        """Load a saved cross-encoder, or start one from a plain pretrained backbone (its head is then untrained).
        ``overrides`` (e.g. ``max_length``) replace saved settings. Weights are read from safetensors only."""
        from transformers import AutoTokenizer
        from transformers.utils import cached_file

        name_or_path = str(name_or_path)
        backbone_config = load_backbone_config(name_or_path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        except (OSError, ValueError) as e:
            raise ValueError(f"{name_or_path} has no tokenizer that transformers can load: "
                             f"{str(e).splitlines()[0][:200]}") from None
        saved = getattr(backbone_config, CONFIG_KEY, None)
        if saved is None:
            log.warning("%s is a plain %s backbone without a ranking head: the head is randomly initialised, "
                        "so its scores mean nothing until it is trained", name_or_path, backbone_config.model_type)
            config = MambaRankerConfig.for_backbone(backbone_config, **overrides)
            backbone = load_backbone(name_or_path)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # the same fresh head every time
                return cls(backbone, tokenizer, config)
        config = MambaRankerConfig.from_dict({**saved, **overrides})
        if config.kind != "cross-encoder":
            raise ValueError(f"{name_or_path} is a {config.kind} checkpoint, not a cross-encoder")
        weights = cached_file(name_or_path, SAFETENSORS, _raise_exceptions_for_missing_entries=False)
        if weights is None:
            raise ValueError(f"{name_or_path} has no {SAFETENSORS} (weights are only loaded from safetensors)")
        from safetensors.torch import load_file

        model = cls(build_backbone(backbone_config), tokenizer, config)
        try:
            model.load_state_dict(load_file(weights))
        except RuntimeError as e:
            raise ValueError(f"{weights} does not match its config.json: {str(e).splitlines()[0]}") from None
        return model

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write config.json (backbone config + ``mamba_pyserini`` settings), model.safetensors and the tokenizer."""
        from safetensors.torch import save

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = self.backbone.config.to_dict()
        config[CONFIG_KEY] = self.config.to_dict()
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with atomic_write(path / SAFETENSORS, "wb") as f:
            f.write(save(state, metadata={"format": "pt"}))
        self.tokenizer.save_pretrained(str(path))
        with atomic_write(path / "config.json") as f:
            json.dump(config, f, indent=2, sort_keys=True)

    # -- scoring ---------------------------------------------------------------------------------------------------
    def forward(self, input_ids, attention_mask, token_type_ids=None):
        """Scores (B,) for a right-padded batch."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.backbone(**inputs).last_hidden_state  # (B, L, D)
        pooled = pool(hidden, attention_mask, self.config.pooling)  # (B, D)
        return self.head(pooled.to(self.head.weight.dtype)).squeeze(-1)  # (B,)

    def tokenize(self, queries: list[str], docs: list[str]) -> list[dict[str, list[int]]]:
        return encode_pairs(self.tokenizer, self.config.template, queries, docs, self.config.max_length)

    def collate(self, features: list[dict[str, list[int]]], multiple_of: int = 1) -> dict[str, torch.Tensor]:
        """Right-pad features into tensors (pads never precede a real token)."""
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        length = max(len(f["input_ids"]) for f in features)
        length = -(-length // multiple_of) * multiple_of
        batch = {"attention_mask": torch.zeros(len(features), length, dtype=torch.long)}
        for key in features[0]:
            batch[key] = torch.full((len(features), length), pad if key == "input_ids" else 0, dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            batch["attention_mask"][i, :n] = 1
            for key, ids in f.items():
                batch[key][i, :n] = torch.tensor(ids)
        return batch

    @torch.inference_mode()
    def predict(self, pairs: list[tuple[str, str]], batch_size: int = 32, device: str | None = None,
                show_progress_bar: bool = False) -> np.ndarray:
        """Scores of (query, document) pairs, computed in length-sorted batches (bf16 autocast on GPU)."""
        from tqdm import tqdm

        if not pairs:
            return np.zeros(0, dtype=np.float32)
        device = resolve_device(device)
        self.eval().to(device)
        features = self.tokenize([q for q, _ in pairs], [d for _, d in pairs])
        order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
        scores = np.empty(len(features), dtype=np.float32)
        on_gpu = device.startswith("cuda")
        batches = range(0, len(order), batch_size)
        with kernels_for(device), torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu):
            for start in tqdm(batches, desc="rerank", unit="batch", file=sys.stderr, disable=not show_progress_bar):
                idx = order[start:start + batch_size]
                batch = self.collate([features[i] for i in idx], 8 if on_gpu else 1)
                scores[idx] = self(**{k: v.to(device) for k, v in batch.items()}).float().cpu().numpy()
        if not np.isfinite(scores).all():
            raise ValueError(f"the model gave {int((~np.isfinite(scores)).sum())} non-finite (NaN/inf) scores")
        return scores

    def rank(self, query: str, documents: list[str], top_k: int | None = None, batch_size: int = 32,
             return_documents: bool = False) -> list[dict]:
        """Documents sorted by score, as sentence-transformers' ``CrossEncoder.rank``: ``{corpus_id, score}``."""
        scores = self.predict([(query, d) for d in documents], batch_size=batch_size)
        order = sorted(range(len(documents)), key=lambda i: (-float(scores[i]), i))[:top_k]
        return [{"corpus_id": i, "score": float(scores[i]), **({"text": documents[i]} if return_documents else {})}
                for i in order]
