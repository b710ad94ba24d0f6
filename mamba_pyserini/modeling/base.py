"""RankingModel: what cross-encoders and bi-encoders share (loading, saving, batching), and ``load_model``."""
from __future__ import annotations

import json
import logging
import os
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._io import atomic_write, load_safetensors
from .._kernels import inference_autocast, kernels_for
from .backbone import (
    SAFETENSORS,
    build_backbone,
    is_encoder,
    load_backbone,
    load_backbone_config,
    max_positions,
    resolve_checkpoint,
)
from .config import CONFIG_KEY, MambaRankerConfig
from .packing import layout, packed_hidden, packs, to_device
from .packing import pack as pack_features

log = logging.getLogger("mamba_pyserini")
ST_MODULES = "modules.json"  # marks a sentence-transformers model directory
AHEAD = 4  # batches the CPU may run ahead of the GPU in inference
TOKENIZE_CHUNK = 1024  # items tokenized at a time in inference (the next chunk while the model runs this one)


def resolve_device(device: str | None) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class RankingModel(nn.Module):
    """A transformers backbone with a :class:`MambaRankerConfig`; subclasses set ``KIND`` and add their heads."""

    KIND = ""

    def __init__(self, backbone: nn.Module, tokenizer, config: MambaRankerConfig):
        super().__init__()
        if config.kind != self.KIND:
            raise ValueError(f"a {config.kind} config cannot build a {self.KIND}")
        limit = max_positions(backbone.config)
        if limit is not None and config.max_length > limit:
            raise ValueError(f"max length {config.max_length} exceeds the model's maximum of {limit} positions")
        self.backbone, self.tokenizer, self.config = backbone, tokenizer, config
        self.causal = not is_encoder(backbone.config)
        self.packing: bool | None = None  # pack batches: None = where ``packing.packs`` says; True/False: always/never

    # -- construction and persistence ------------------------------------------------------------------------------
    @classmethod
    def from_backbone(cls, backbone: nn.Module, tokenizer, config: MambaRankerConfig | None = None, **overrides):
        """A model around a backbone, with ``config`` or this kind's defaults (a fresh head has a fixed seed)."""
        config = config or MambaRankerConfig.for_backbone(backbone.config, kind=cls.KIND, **overrides)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return cls(backbone, tokenizer, config)

    @classmethod
    def from_backbone_config(cls, backbone_config, tokenizer, **overrides):
        """A randomly initialised model (e.g. a tiny Mamba for tests, or a model to train from scratch)."""
        return cls.from_backbone(build_backbone(backbone_config), tokenizer, **overrides)

    @classmethod
    def from_backbone_of(cls, name_or_path: str | os.PathLike, **overrides):
        """A model that starts from the backbone and tokenizer of another checkpoint of either kind (e.g. a
        cross-encoder from a trained bi-encoder), or of a plain pretrained backbone, with this kind's defaults and a
        fresh head."""
        from transformers import AutoTokenizer

        name_or_path = resolve_checkpoint(name_or_path)
        config = load_backbone_config(name_or_path)
        if getattr(config, CONFIG_KEY, None) is None:
            backbone = load_backbone(name_or_path)
        else:  # a saved model of ours: its weights under ``backbone.``, beside its head's
            backbone = build_backbone(config)
            prefix = "backbone."
            backbone.load_state_dict({k[len(prefix):]: v for k, v in load_safetensors(
                _weights_file(name_or_path)).items() if k.startswith(prefix)})
        return cls.from_backbone(backbone, AutoTokenizer.from_pretrained(name_or_path), **overrides)

    @classmethod
    def plain_config(cls, path: str, backbone_config, overrides: dict) -> MambaRankerConfig:
        """Settings for a plain pretrained backbone (no ``mamba_pyserini`` block in its config.json)."""
        return MambaRankerConfig.for_backbone(backbone_config, kind=cls.KIND, **overrides)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **overrides):
        """Load a saved model, or start one from a plain pretrained backbone. ``overrides`` (e.g. ``max_length``)
        replace saved settings. Weights are read from safetensors only."""
        from transformers import AutoTokenizer

        name_or_path = resolve_checkpoint(name_or_path, cls.KIND)
        backbone_config = load_backbone_config(name_or_path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        except (OSError, ValueError) as e:
            raise ValueError(f"{name_or_path} has no tokenizer that transformers can load: "
                             f"{str(e).splitlines()[0][:200]}") from None
        saved = getattr(backbone_config, CONFIG_KEY, None)
        if saved is None:
            config = cls.plain_config(name_or_path, backbone_config, overrides)
            return cls.from_backbone(load_backbone(name_or_path), tokenizer, config)
        config = MambaRankerConfig.from_dict({**saved, **overrides})
        if config.kind != cls.KIND:
            raise ValueError(f"{name_or_path} is a {config.kind} checkpoint, not a {cls.KIND}")
        model = cls(build_backbone(backbone_config), tokenizer, config)
        weights = _weights_file(name_or_path)
        state = load_safetensors(weights)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"{weights} does not match its config.json: {str(e).splitlines()[0]}") from None
        return model

    def save_pretrained(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
        """Write config.json (backbone config + ``mamba_pyserini`` settings), model.safetensors (in ``dtype``,
        e.g. torch.float16, if given) and the tokenizer."""
        from safetensors.torch import save

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = self.backbone.config.to_dict()
        config.pop("_name_or_path", None)  # where it was loaded from: a path on some other machine
        config[CONFIG_KEY] = self.config.to_dict()
        state = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in self.state_dict().items()}
        with atomic_write(path / SAFETENSORS, "wb") as f:
            f.write(save(state, metadata={"format": "pt"}))
        self.tokenizer.save_pretrained(str(path))
        with atomic_write(path / "config.json") as f:
            json.dump(config, f, indent=2, sort_keys=True)

    # -- batching --------------------------------------------------------------------------------------------------
    def hidden(self, input_ids, attention_mask, token_type_ids=None, all_layers: bool = False, packing=None):
        """Last hidden states (B, L, D) of a right-padded batch, or of a packed one (``packing``, see
        :meth:`batch`); with ``all_layers`` (padded batches only), also the tuple of every layer's (embeddings
        first)."""
        if packing is not None:
            if all_layers:
                raise ValueError("every layer's hidden states need a right-padded batch, not a packed one")
            return packing.unpack(packed_hidden(self.backbone, input_ids, token_type_ids, packing))
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        out = self.backbone(**inputs, output_hidden_states=all_layers, use_cache=False)  # a cache would cost time
        return (out.last_hidden_state, out.hidden_states) if all_layers else out.last_hidden_state

    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else (self.tokenizer.eos_token_id or 0)

    def collate(self, features: list[dict[str, list[int]]], multiple_of: int = 1) -> dict[str, torch.Tensor]:
        """Right-pad features into tensors (pads never precede a real token)."""
        pad = self.pad_id()
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

    def batch(self, features: list[dict[str, list[int]]], device: str, pack: bool | None = None) -> dict:
        """The model's inputs for ``features`` on ``device``: packed into rows (``modeling/packing.py``) where
        ``packing.packs`` says (or ``pack``, else :attr:`packing`, insists), else right-padded; on GPUs, padded
        lengths are rounded up to a multiple of 8 and packed rows laid out as ``packing.layout`` says, so that steps
        have few distinct shapes."""
        on_gpu = device.startswith("cuda")
        pack = self.packing if pack is None else pack
        if packs(device, self.backbone.config) if pack is None else pack:
            batch = pack_features(features, self.pad_id(), **layout(self.backbone.config, on_gpu))
        else:
            batch = self.collate(features, 8 if on_gpu else 1)
        return {k: v.to(device, non_blocking=True) if k == "packing" else to_device(v, device, non_blocking=True)
                for k, v in batch.items()}

    @staticmethod
    def token_types(token_type_ids, packing):
        """Token type ids of the right-padded layout, for pooling."""
        if token_type_ids is None or packing is None:
            return token_type_ids
        return packing.unpack(token_type_ids[..., None])[..., 0]

    @torch.inference_mode()
    def run_sorted(self, items: list, tokenize, batch_size: int, device: str | None, desc: str,
                   show_progress_bar: bool = False) -> np.ndarray:
        """``self(**batch)`` over ``tokenize(items)`` in length-sorted batches (bf16 autocast on GPUs and bf16-capable
        CPUs: ``_kernels.inference_bf16``), as float32 rows in the input order. The items are tokenized
        :data:`TOKENIZE_CHUNK` at a time, the next chunk in a background thread while this one runs; on GPUs results
        come back asynchronously (pinned memory), so that the CPU prepares the next batches while the GPU computes, up
        to :data:`AHEAD`."""
        from tqdm import tqdm

        if not items:
            return np.zeros(0, dtype=np.float32)
        device = resolve_device(device)
        self.eval().to(device)
        chunks = [items[i:i + TOKENIZE_CHUNK] for i in range(0, len(items), TOKENIZE_CHUNK)]
        out, pending = None, deque()

        def collect():
            idx, values, done = pending.popleft()
            if done is not None:
                done.synchronize()
            out[idx] = values.numpy()

        bar = tqdm(total=sum(-(-len(c) // batch_size) for c in chunks), desc=desc, unit="batch", file=sys.stderr,
                   disable=not show_progress_bar)
        with ThreadPoolExecutor(1) as pool, bar, kernels_for(device), inference_autocast(device):
            tokenized = pool.submit(tokenize, chunks[0])
            for k in range(len(chunks)):
                features = tokenized.result()
                if k + 1 < len(chunks):
                    tokenized = pool.submit(tokenize, chunks[k + 1])
                order = np.argsort([-len(f["input_ids"]) for f in features], kind="stable")
                for start in range(0, len(order), batch_size):
                    idx = order[start:start + batch_size]
                    values = self(**self.batch([features[i] for i in idx], device)).float()
                    if out is None:
                        out = np.empty((len(items), *values.shape[1:]), dtype=np.float32)
                    done = None
                    if values.is_cuda:
                        values, done = values.to("cpu", non_blocking=True), torch.cuda.Event()
                        done.record()
                    pending.append((idx + k * TOKENIZE_CHUNK, values, done))
                    if len(pending) > AHEAD:
                        collect()
                    bar.update()
            while pending:
                collect()
        if not np.isfinite(out).all():
            raise ValueError(f"the model gave {int((~np.isfinite(out)).sum())} non-finite (NaN/inf) values")
        return out


def _weights_file(name_or_path: str) -> str:
    """The checkpoint's model.safetensors (downloaded from the hub when ``name_or_path`` is an id there)."""
    from transformers.utils import cached_file

    weights = cached_file(name_or_path, SAFETENSORS, _raise_exceptions_for_missing_entries=False)
    if weights is None:
        raise ValueError(f"{name_or_path} has no {SAFETENSORS} (weights are only loaded from safetensors)")
    return weights
