"""mamba_pyserini: Mamba rerankers and encoders in Pyserini's retrieval stack.

Public names are imported lazily, so ``import mamba_pyserini`` starts neither torch nor the JVM.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "MambaCrossEncoder": "mamba_pyserini.modeling.cross_encoder",
    "MambaBiEncoder": "mamba_pyserini.modeling.bi_encoder",
    "load_model": "mamba_pyserini.modeling.auto",
    "MambaReranker": "mamba_pyserini.reranker",
    "MambaRankerConfig": "mamba_pyserini.modeling.config",
    "Bm25Searcher": "mamba_pyserini.sparse",
    "Searcher": "mamba_pyserini.first_stage",
    "Hit": "mamba_pyserini.runs",
    "load_topics": "mamba_pyserini.topics",
    "evaluate_run": "mamba_pyserini.evaluation",
    "kernel_info": "mamba_pyserini._kernels",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mamba_pyserini' has no attribute {name!r}")
