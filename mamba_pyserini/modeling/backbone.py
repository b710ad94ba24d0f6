"""Backbones: any transformers base model (MambaModel, Mamba2Model, BERT, GPT-NeoX, ...) -> (B, L, D) states."""
from __future__ import annotations

SAFETENSORS = "model.safetensors"


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
