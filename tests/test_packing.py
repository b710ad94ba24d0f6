"""Packed batches (sequences end to end in rows; Mamba-1's convolution inputs zeroed and scan state reset at
separators, Mamba-2's restarted at each segment id) score and train as right-padded ones, on the PyTorch path that
CPUs run."""
import pytest
import torch

import mamba_pyserini.modeling.packing as packing
from conftest import tiny_backbone_config
from mamba_pyserini._kernels import kernels_for
from mamba_pyserini.modeling.cross_encoder import MambaCrossEncoder
from mamba_pyserini.modeling.packing import pack, packs, separator_tokens


@pytest.fixture(scope="module")
def model_and_features(neox_tokenizer):
    torch.manual_seed(0)
    model = MambaCrossEncoder.from_backbone_config(tiny_backbone_config("mamba", len(neox_tokenizer)), neox_tokenizer)
    features = model.tokenize(["what is a cat"] * 4, ["a cat is an animal " * k for k in (1, 3, 7, 2)])
    return model, features


def packed(model, features, row_length=None, separators=None, **layout):
    gap = separator_tokens(model.backbone.config) if separators is None else separators
    return pack(features, model.pad_id(), row_length, gap, **layout)


def scores_and_grads(model, batch):
    model.zero_grad()
    with kernels_for("cpu"):
        scores = model(**batch)
    scores.sum().backward()
    return scores.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_packed_matches_padded(model, features, row_length=None, **layout) -> dict:
    """Packed scores and gradients equal the right-padded ones; returns the gradients by name."""
    padded, padded_grads = scores_and_grads(model, model.batch(features, "cpu", pack=False))
    scores, packed_grads = scores_and_grads(model, packed(model, features, row_length, **layout))
    torch.testing.assert_close(scores, padded, rtol=1e-5, atol=1e-6)
    assert padded_grads.keys() == packed_grads.keys()
    for name, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    return packed_grads


def test_pack_lays_sequences_in_rows_with_separators(model_and_features):
    model, features = model_and_features
    lengths = [len(f["input_ids"]) for f in features]
    gap = separator_tokens(model.backbone.config)
    assert gap == model.backbone.config.conv_kernel - 1 == 3
    batch = packed(model, features, row_length=60)
    p = batch["packing"]
    rows, width = batch["input_ids"].shape
    assert width == max(60, max(lengths)) and rows > 1
    flat = batch["input_ids"].flatten()
    assert flat[p.source].tolist() == [t for f in features for t in f["input_ids"]]
    starts = set(p.source.tolist()) - {i + 1 for i in p.source.tolist()}  # each sequence's first token
    assert len(starts) == len(features)
    marks = p.separators[:, 0].flatten()
    assert int(marks.sum()) == gap * (len(features) - rows)  # before every sequence that does not begin a row
    for start in starts:  # ... immediately before it
        assert start % width == 0 or marks[start - gap:start].all()
    bounds = set(p.cu_seqlens.tolist())  # segments: each sequence, each run of separators, each row's padding
    assert starts | {r * width for r in range(rows + 1)} <= bounds
    assert torch.equal(p.unpack(batch["input_ids"][..., None])[..., 0] * batch["attention_mask"],
                       model.collate(features)["input_ids"] * batch["attention_mask"])
    ids = p.seq_idx.flatten()  # segment ids: one per sequence, others for the separators and padding
    assert p.seq_idx.dtype == torch.int32 and (ids.diff() >= 0).all()
    per_sequence = [set(part.tolist()) for part in ids[p.source].split(lengths)]
    assert all(len(s) == 1 for s in per_sequence) and len(set.union(*per_sequence)) == len(features)
    outside = torch.ones(rows * width, dtype=torch.bool).index_fill(0, p.source, False)
    assert not set(ids[outside].tolist()) & set.union(*per_sequence)


@pytest.mark.parametrize("row_length", [None, 40])
def test_packed_scores_and_gradients_match_padded(model_and_features, row_length):
    model, features = model_and_features
    model.train()
    assert_packed_matches_padded(model, features, row_length)


@pytest.fixture(scope="module")
def mamba2_model(neox_tokenizer):
    torch.manual_seed(0)
    return MambaCrossEncoder.from_backbone_config(tiny_backbone_config("mamba2", len(neox_tokenizer)), neox_tokenizer)


@pytest.mark.parametrize("row_length, on_gpu", [(None, False), (40, False), (None, True)])
def test_packed_mamba2_scores_and_gradients_match_padded(mamba2_model, model_and_features, row_length, on_gpu):
    """Mamba-2 packs without separators: its convolution and chunk scan restart where the segment id changes (on
    GPUs in one row padded to whole chunks)."""
    features = model_and_features[1]
    assert separator_tokens(mamba2_model.backbone.config) == 0
    mamba2_model.train()
    layout = packing.layout(mamba2_model.backbone.config, on_gpu) if on_gpu else {}
    assert_packed_matches_padded(mamba2_model, features, row_length, **layout)


def test_layout_puts_mamba2_in_one_row_of_whole_chunks_and_others_in_rows(mamba2_model, model_and_features):
    model, features = model_and_features
    tokens = sum(len(f["input_ids"]) for f in features)
    chunk = mamba2_model.backbone.config.chunk_size
    assert tokens % chunk  # the row needs padding to whole chunks
    ids = pack(features, 0, **packing.layout(mamba2_model.backbone.config, on_gpu=True))["input_ids"]
    assert ids.shape == (1, -(-tokens // chunk) * chunk)
    assert packing.layout(model.backbone.config, on_gpu=True) == {"separators": 3, "row_length": packing.ROW_LENGTH}
    for m, gaps in ((model, 3), (mamba2_model, 0)):
        cpu = packing.layout(m.backbone.config, on_gpu=False)
        assert cpu == {"separators": gaps}
        assert pack(features, 0, **cpu)["input_ids"].shape == (1, tokens + gaps * (len(features) - 1))


def test_packed_mamba2_sequences_leak_without_segment_ids(mamba2_model, model_and_features):
    features = model_and_features[1]
    mamba2_model.eval()
    batch = packed(mamba2_model, features)
    with torch.no_grad(), kernels_for("cpu"):
        padded = mamba2_model(**mamba2_model.batch(features, "cpu", pack=False))
        assert torch.allclose(mamba2_model(**batch), padded, rtol=1e-5, atol=1e-6)
        batch["packing"].seq_idx.zero_()  # one segment: each sequence's state flows into the next
        leaky = mamba2_model(**batch)
    assert (leaky - padded).abs().max() > 1e-4


def test_packed_scores_match_padded_with_biased_projections(neox_tokenizer):
    """With a bias on the input projection, zeroing the separators' inputs before it does not zero them after."""
    torch.manual_seed(0)
    config = tiny_backbone_config("mamba", len(neox_tokenizer))
    config.use_bias = True
    model = MambaCrossEncoder.from_backbone_config(config, neox_tokenizer)
    assert model.backbone.layers[0].mixer.in_proj.bias is not None
    features = model.tokenize(["what is a cat"] * 3, ["a cat is an animal " * k for k in (1, 4, 2)])
    assert_packed_matches_padded(model, features)


@pytest.mark.parametrize("leak", ["scan state", "convolution"])
def test_without_the_reset_or_enough_separators_sequences_leak_into_each_other(model_and_features, monkeypatch,
                                                                               leak):
    model, features = model_and_features
    model.eval()
    with torch.no_grad(), kernels_for("cpu"):
        padded = model(**model.batch(features, "cpu", pack=False))
        if leak == "scan state":
            monkeypatch.setattr(packing, "RESET_STEP", 0.0)
        leaky = model(**packed(model, features, separators=1 if leak == "convolution" else None))
    assert (leaky - padded).abs().max() > 1e-4


def test_cpu_batches_are_padded_and_hidden_states_of_every_layer_need_them(model_and_features, mamba2_model):
    model, features = model_and_features
    assert not packs("cpu", model.backbone.config) and "packing" not in model.batch(features, "cpu")
    assert not packs("cpu", mamba2_model.backbone.config)
    with pytest.raises(ValueError, match="right-padded"):
        model.hidden(**packed(model, features), all_layers=True)


def test_lora_adapted_projections_run_packed_as_padded(model_and_features):
    """Projections that are not plain ``nn.Linear`` (the trainer's LoRA targets) go through their own forward."""
    import copy

    from peft import LoraConfig, get_peft_model

    from mamba_pyserini.training.trainer import MAMBA_LORA_TARGETS

    model, features = model_and_features
    model = copy.deepcopy(model)
    torch.manual_seed(1)
    model.backbone = get_peft_model(model.backbone, LoraConfig(r=4, target_modules=list(MAMBA_LORA_TARGETS),
                                                               init_lora_weights=False))
    model.train()
    assert any("lora" in name for name in assert_packed_matches_padded(model, features, row_length=60))


def test_lora_adapted_mamba2_runs_packed_as_padded(mamba2_model, model_and_features):
    """The packed Mamba-2 mixer calls the in-projection as a module (peft refuses LoRA on Mamba's out-projection,
    whose weight the fused mixer reads directly)."""
    import copy

    from peft import LoraConfig, get_peft_model

    features = model_and_features[1]
    model = copy.deepcopy(mamba2_model)
    torch.manual_seed(1)
    model.backbone = get_peft_model(model.backbone, LoraConfig(r=4, target_modules=["in_proj", "embeddings"],
                                                               init_lora_weights=False))
    model.train()
    grads = assert_packed_matches_padded(model, features, row_length=60)
    assert any("in_proj.lora" in name for name in grads) and any("embeddings.lora" in name for name in grads)


@pytest.mark.parametrize("x_channels_last", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_matmul_gradients_match_autograd_in_the_inputs_layout(x_channels_last, channels_last):
    torch.manual_seed(0)
    weight = torch.randn(5, 3, requires_grad=True)
    base = torch.randn(2, 7, 3) if x_channels_last else torch.randn(2, 3, 7)
    base.requires_grad_()
    x = base.transpose(1, 2) if x_channels_last else base  # (R, C_in, T) as it lies in memory
    grad = torch.randn(2, 7, 5) if channels_last else torch.randn(2, 5, 7)
    out = packing._matmul(weight, x, channels_last)
    reference = torch.einsum("oi,rit->rto" if channels_last else "oi,rit->rot", weight, x)
    torch.testing.assert_close(out, reference)
    dw, dx = torch.autograd.grad(out, (weight, x), grad)
    dw_ref, dx_ref = torch.autograd.grad(reference, (weight, x), grad)
    torch.testing.assert_close(dw, dw_ref)
    torch.testing.assert_close(dx, dx_ref)
    assert dx.stride() == x.stride()  # no transposed copy needed downstream
