"""Where the bundled data lives: ``collections/`` beside the package (an editable install), or
``MAMBA_PYSERINI_COLLECTIONS``."""
from __future__ import annotations

import os
from pathlib import Path

COLLECTIONS = Path(os.environ.get("MAMBA_PYSERINI_COLLECTIONS", Path(__file__).resolve().parent.parent / "collections"))
TOPICS_DIR = COLLECTIONS / "topics-and-qrels"
