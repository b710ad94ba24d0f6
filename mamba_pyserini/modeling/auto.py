"""``load_model``: the cross-encoder, bi-encoder or SPLADE encoder that a checkpoint holds."""
from __future__ import annotations

import os
from pathlib import Path

from .backbone import load_backbone_config, resolve_checkpoint
from .base import ST_MODULES, RankingModel
from .bi_encoder import MambaBiEncoder
from .config import CONFIG_KEY, MambaRankerConfig
from .cross_encoder import MambaCrossEncoder
from .splade import SpladeEncoder

CLASSES = {c.KIND: c for c in (MambaCrossEncoder, MambaBiEncoder, SpladeEncoder)}


def checkpoint_kind(name_or_path: str | os.PathLike) -> str:
    """'cross-encoder', 'bi-encoder' or 'splade': a saved model's kind; a sentence-transformers directory is a
    bi-encoder, a plain masked language model (SPLADE's form) a SPLADE encoder, any other plain backbone a
    cross-encoder."""
    name_or_path = resolve_checkpoint(name_or_path)
    config = load_backbone_config(name_or_path)
    saved = getattr(config, CONFIG_KEY, None)
    if saved is not None:
        return MambaRankerConfig.from_dict(saved).kind
    if (Path(name_or_path) / ST_MODULES).is_file():
        return "bi-encoder"
    heads = getattr(config, "architectures", None) or []
    return "splade" if heads and all(h.endswith("ForMaskedLM") for h in heads) else "cross-encoder"


def load_model(name_or_path: str | os.PathLike, kind: str | None = None, **overrides) -> RankingModel | SpladeEncoder:
    """The cross-encoder, bi-encoder or SPLADE encoder a checkpoint holds; ``kind`` insists on one."""
    return CLASSES[kind or checkpoint_kind(name_or_path)].from_pretrained(name_or_path, **overrides)
