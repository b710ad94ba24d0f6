"""MambaRankerConfig: how a checkpoint turns text into scores or vectors, saved in its config.json under
``mamba_pyserini``."""
from __future__ import annotations

import dataclasses

from ..pooling import POOLINGS
from ..templates import DOCUMENT_QUERY, QUERY_DOCUMENT, TEMPLATES

CONFIG_KEY = "mamba_pyserini"
KINDS = ("cross-encoder", "bi-encoder")
FIRST_STAGES = ("bm25", "bm25-rm3", "other")  # the kinds of first stage a model recommends a rerank weight for


@dataclasses.dataclass
class MambaRankerConfig:
    """``template`` is the cross-encoder's pair layout; ``normalize`` and the prefixes belong to bi-encoders.
    ``rerank_weights`` are the model's recommended share against each kind of first stage (:data:`FIRST_STAGES`) when
    reranking interpolates the two (``reranker.MambaReranker``); a kind it does not name reranks alone (1)."""

    kind: str = "cross-encoder"
    template: str = DOCUMENT_QUERY
    pooling: str = "last"
    max_length: int = 512
    normalize: bool = False
    query_prefix: str = ""
    document_prefix: str = ""
    rerank_weights: dict = dataclasses.field(default_factory=dict)
    format_version: int = 1

    def __post_init__(self):
        for field, allowed in (("kind", KINDS), ("template", TEMPLATES), ("pooling", POOLINGS)):
            if getattr(self, field) not in allowed:
                raise ValueError(f"unknown {field} {getattr(self, field)!r}; choose one of {', '.join(allowed)}")
        if self.pooling == "pair" and (self.kind != "cross-encoder" or self.template != QUERY_DOCUMENT):
            raise ValueError(f"'pair' pooling is for cross-encoders with the {QUERY_DOCUMENT} template")
        if not isinstance(self.max_length, int) or self.max_length < 8:
            raise ValueError(f"max length must be an integer of at least 8, not {self.max_length!r}")
        for stage, weight in self.rerank_weights.items():
            if stage not in FIRST_STAGES or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
                raise ValueError(f"rerank weight {stage}: {weight!r}: the first stage must be one of "
                                 f"{', '.join(FIRST_STAGES)} and the weight between 0 and 1")

    @classmethod
    def for_backbone(cls, backbone_config, **overrides) -> "MambaRankerConfig":
        """Defaults for a backbone: encoders take ``[CLS] q [SEP] d`` and CLS pooling; causal models (Mamba,
        decoders) take the RankMamba template and the last real token; max length 512 or the positions there are."""
        from .backbone import is_encoder, max_positions

        encoder = is_encoder(backbone_config)
        defaults = {"template": QUERY_DOCUMENT if encoder else DOCUMENT_QUERY, "pooling": "cls" if encoder else "last",
                    "max_length": min(cls.max_length, max_positions(backbone_config) or cls.max_length)}
        return cls(**{**defaults, **overrides})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MambaRankerConfig":
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown {CONFIG_KEY} config fields: {', '.join(sorted(unknown))}")
        return cls(**data)
