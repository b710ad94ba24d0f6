"""Packed batches (sequences end to end in rows, Mamba-1 scan state reset at separators) score and train as
right-padded ones, on the PyTorch path that CPUs run."""
import pytest
import torch

import mamba_pyserini.modeling.packing as packing
from mamba_pyserini._kernels import kernels_for, packs
from mamba_pyserini.modeling.cross_encoder import MambaCrossEncoder
from mamba_pyserini.modeling.packing import pack

from conftest import tiny_backbone_config


@pytest.fixture(scope="module")
def model_and_features(neox_tokenizer):
    torch.manual_seed(0)
    model = MambaCrossEncoder.from_backbone_config(tiny_backbone_config("mamba", len(neox_tokenizer)), neox_tokenizer)
    features = model.tokenize(["what is a cat"] * 4, ["a cat is an animal " * k for k in (1, 3, 7, 2)])
    return model, features


def scores_and_grads(model, batch):
    model.zero_grad()
    with kernels_for("cpu"):
        scores = model(**batch)
    scores.sum().backward()
    return scores.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_pack_lays_sequences_in_rows_with_separators(model_and_features):
    model, features = model_and_features
    lengths = [len(f["input_ids"]) for f in features]
    batch = pack(features, model.pad_id(), row_length=40, separators=True)
    p = batch["packing"]
    rows, width = batch["input_ids"].shape
    assert width == max(40, max(lengths)) and rows > 1
    flat = batch["input_ids"].flatten()
    assert flat[p.source].tolist() == [t for f in features for t in f["input_ids"]]
    assert int(p.separators.sum()) == len(features) - rows  # one before every sequence that does not begin a row
    assert p.cu_seqlens[-1] == rows * width
    assert torch.equal(p.unpack(batch["input_ids"][..., None])[..., 0] * batch["attention_mask"],
                       model.collate(features)["input_ids"] * batch["attention_mask"])
    for r in range(rows):  # segments never share an id within a row, and separators are their own segment
        ids = p.seq_idx[r]
        assert (ids[1:] >= ids[:-1]).all()
        for at in p.separators[r, :, 0].nonzero()[:, 0]:
            assert ids[at] != ids[at - 1] and ids[at] != ids[at + 1]


@pytest.mark.parametrize("row_length", [None, 40])
def test_packed_scores_and_gradients_match_padded(model_and_features, row_length):
    model, features = model_and_features
    model.train()
    padded, padded_grads = scores_and_grads(model, model.batch(features, "cpu", pack=False))
    packed, packed_grads = scores_and_grads(model, pack(features, model.pad_id(), row_length, separators=True))
    torch.testing.assert_close(packed, padded, rtol=1e-5, atol=1e-6)
    assert padded_grads.keys() == packed_grads.keys()
    for name, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_without_the_reset_state_leaks_across_sequences(model_and_features, monkeypatch):
    model, features = model_and_features
    model.eval()
    with torch.no_grad(), kernels_for("cpu"):
        padded = model(**model.batch(features, "cpu", pack=False))
        monkeypatch.setattr(packing, "RESET_STEP", 0.0)
        leaky = model(**pack(features, model.pad_id(), None, separators=True))
    assert (leaky - padded).abs().max() > 1e-4


def test_cpu_batches_are_padded_and_hidden_states_of_every_layer_need_them(model_and_features):
    model, features = model_and_features
    assert not packs("cpu", model.backbone.config) and "packing" not in model.batch(features, "cpu")
    with pytest.raises(ValueError, match="right-padded"):
        model.hidden(**pack(features, model.pad_id()), all_layers=True)
