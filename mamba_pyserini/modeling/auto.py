"""``load_model``: the cross-encoder or bi-encoder that a checkpoint holds."""
from __future__ import annotations

import os
from pathlib import Path

from .backbone import load_backbone_config, resolve_checkpoint
from .base import ST_MODULES, RankingModel
from .bi_encoder import MambaBiEncoder
from .config import CONFIG_KEY, MambaRankerConfig
from .cross_encoder import MambaCrossEncoder

CLASSES = {c.KIND: c for c in (MambaCrossEncoder, MambaBiEncoder)}


def checkpoint_kind(name_or_path: str | os.PathLike) -> str:
    """'cross-encoder' or 'bi-encoder': a saved model's kind; a sentence-transformers directory is a bi-encoder, any
    other plain backbone a cross-encoder."""
    name_or_path = resolve_checkpoint(name_or_path)
    saved = getattr(load_backbone_config(name_or_path), CONFIG_KEY, None)
    if saved is not None:
        return MambaRankerConfig.from_dict(saved).kind
    return "bi-encoder" if (Path(name_or_path) / ST_MODULES).is_file() else "cross-encoder"


def load_model(name_or_path: str | os.PathLike, kind: str | None = None, **overrides) -> RankingModel:
    """The cross-encoder or bi-encoder a checkpoint holds; ``kind`` insists on one."""
    return CLASSES[kind or checkpoint_kind(name_or_path)].from_pretrained(name_or_path, **overrides)
