"""BiMamba-2 (modeling/bimamba.py): the bidirectional mixer against a step-by-step recurrence, padding and direction,
conversion from all-MiniLM-L6-v2 (the real teacher) and teacher-forced alignment."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mamba_pyserini.modeling.auto import load_model
from mamba_pyserini.modeling.bimamba import BiMamba2Config, BiMamba2Mixer, BiMamba2Model, from_bert

TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, intermediate_size=32, num_heads=2, head_dim=8,
            state_size=4, chunk_size=4, conv_kernel=3, max_position_embeddings=32, hidden_dropout_prob=0.0)


def _recurrence(mixer, seq):
    """One direction of the mixer as Mamba-2's recurrence, token by token: (L, D) -> gated, normed (L, inner)."""
    z, xbc, dt = mixer.in_proj(seq).split([mixer.inner, mixer.conv_dim, mixer.heads], -1)
    width = mixer.conv1d.weight.shape[-1]
    padded = F.pad(xbc, (0, 0, width - 1, 0))
    conv = F.silu(sum(padded[j:j + len(seq)] * mixer.conv1d.weight[:, 0, j] for j in range(width)) + mixer.conv1d.bias)
    x, B, C = conv.split([mixer.inner, mixer.heads * mixer.state, mixer.heads * mixer.state], -1)
    x = x.view(len(seq), mixer.heads, mixer.head_dim)
    B, C = B.view(len(seq), mixer.heads, mixer.state), C.view(len(seq), mixer.heads, mixer.state)
    dt, A = F.softplus(dt + mixer.dt_bias), -torch.exp(mixer.A_log)
    state, out = torch.zeros(mixer.heads, mixer.head_dim, mixer.state), []
    for t in range(len(seq)):
        state = state * torch.exp(dt[t] * A)[:, None, None] + dt[t][:, None, None] * x[t][..., None] * B[t][:, None]
        out.append((state * C[t][:, None]).sum(-1) + mixer.D[:, None] * x[t])
    return mixer._gated_norm(torch.stack(out).reshape(len(seq), mixer.inner), z)


PATHS = pytest.mark.parametrize("compiled", ["1", "0"], ids=["compiled-cpu-mixer", "chunk-scan"])


@PATHS
def test_the_mixer_is_a_forward_and_a_backward_mamba2_recurrence_per_sequence(compiled, monkeypatch):
    """Without gradients on a CPU the mixer runs ``ops/bimamba_cpu.py`` unless MAMBA_PYSERINI_CPU_MIXER=0."""
    monkeypatch.setenv("MAMBA_PYSERINI_CPU_MIXER", compiled)
    torch.manual_seed(0)
    mixer = BiMamba2Mixer(BiMamba2Config(**TINY))
    with torch.no_grad():
        for p in mixer.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(2, 7, 16)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    with torch.no_grad():
        y = mixer(x, mask)
        for row in range(2):
            seq = x[row, :int(mask[row].sum())]
            expected = mixer.out_proj(_recurrence(mixer, seq) + _recurrence(mixer, seq.flip(0)).flip(0))
            torch.testing.assert_close(y[row, :len(seq)], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("shape", [dict(num_heads=3, head_dim=5, state_size=3, conv_kernel=2),
                                   dict(num_heads=2, head_dim=16, state_size=6, conv_kernel=4)],
                         ids=["odd-sizes", "state-not-a-multiple-of-4"])
def test_the_compiled_cpu_mixer_matches_the_chunk_scan_for_other_head_shapes_and_empty_rows(shape, monkeypatch):
    torch.manual_seed(0)
    config = BiMamba2Config(**{**TINY, "hidden_size": 12, **shape})
    mixer = BiMamba2Mixer(config)
    with torch.no_grad():
        for p in mixer.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(4, 9, 12)
    mask = torch.ones(4, 9, dtype=torch.long)
    mask[1, 1:], mask[2, :], mask[3, 6:] = 0, 0, 0  # one token, none, six
    outputs = {}
    for compiled in ("1", "0"):
        monkeypatch.setenv("MAMBA_PYSERINI_CPU_MIXER", compiled)
        with torch.no_grad():
            outputs[compiled] = mixer(x, mask)
    real = mask.bool()
    torch.testing.assert_close(outputs["1"][real], outputs["0"][real], atol=1e-5, rtol=1e-4)


@PATHS
def test_every_token_reads_the_whole_text_and_padding_changes_nothing(compiled, monkeypatch):
    monkeypatch.setenv("MAMBA_PYSERINI_CPU_MIXER", compiled)
    torch.manual_seed(0)
    model = BiMamba2Model(BiMamba2Config(**TINY)).eval()
    ids = torch.tensor([[1, 5, 9, 13, 17, 2]])
    changed = ids.clone()
    changed[0, 4] = 30
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)
    with torch.no_grad():
        out = model(ids).last_hidden_state
        assert not torch.allclose(out[0, 0], model(changed).last_hidden_state[0, 0])  # later tokens reach the first
        alone = model(padded, attention_mask=(padded > 0).long()).last_hidden_state[:, :6]
    torch.testing.assert_close(alone, out, atol=1e-5, rtol=1e-4)


def test_a_bimamba2_bi_encoder_saves_and_loads_through_transformers_auto_classes(tmp_path, minilm):
    from mamba_pyserini.modeling.bi_encoder import MambaBiEncoder

    teacher = load_model(minilm, kind="bi-encoder")
    model = MambaBiEncoder.from_backbone(BiMamba2Model(BiMamba2Config(**{**TINY, "vocab_size": 30522})),
                                         teacher.tokenizer, pooling="mean", normalize=True, max_length=32)
    assert not model.causal and model.config.template == "query-document"
    model.save_pretrained(tmp_path / "m")
    again = load_model(tmp_path / "m")
    texts = ["a state space model", "reranks passages"]
    np.testing.assert_allclose(again.encode(texts), model.encode(texts), atol=1e-6)


def test_conversion_keeps_the_teachers_embeddings_mlps_and_norms_and_maps_attention_to_the_mixer(minilm):
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(minilm).float()
    model = from_bert(bert)
    assert sum(p.numel() for p in model.parameters()) < 24_000_000
    assert torch.equal(model.embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight)
    layer, source = model.layers[3], bert.encoder.layer[3]
    assert torch.equal(layer.intermediate.weight, source.intermediate.dense.weight)
    assert torch.equal(layer.output_norm.bias, source.output.LayerNorm.bias)
    assert torch.equal(layer.mixer.out_proj.weight, source.attention.output.dense.weight)
    inner = layer.mixer.inner
    rows = layer.mixer.in_proj.weight
    assert torch.equal(rows[inner:2 * inner], source.attention.self.value.weight)
    assert torch.equal(rows[2 * inner:3 * inner], source.attention.self.key.weight)
    torch.testing.assert_close(rows[3 * inner:4 * inner], source.attention.self.query.weight / 32 ** 0.5)


@pytest.mark.slow
def test_alignment_teaches_each_mixer_the_attention_it_replaces(minilm):
    from mamba_pyserini.training.distill import align_mixers, init_student

    teacher = load_model(minilm, kind="bi-encoder")
    backbone, _ = init_student(str(minilm), "bimamba2", layers=6)
    texts = ["what is the capital of france", "Paris is the capital of France.", "how do vaccines work",
             "Vaccines train the immune system to recognise a pathogen.", "mamba state space models",
             "The black mamba is a venomous snake native to Africa."]
    history = align_mixers(backbone, teacher, texts, steps=50, batch_size=6, learning_rate=3e-3, device="cpu")
    assert [h["step"] for h in history] == [50]
    features = teacher.collate(teacher.tokenize(texts, False))
    with torch.no_grad():
        states = teacher(**features, all_layers=True)[1]
        fresh, _ = init_student(str(minilm), "bimamba2", layers=6)
        real = features["attention_mask"].bool()
        errors = [[(b.layers[i](states[i], features["attention_mask"])[real] - states[i + 1][real]).pow(2).mean()
                   for i in range(6)] for b in (fresh, backbone)]
    assert all(after < 0.5 * before for before, after in zip(*errors)), errors


def test_backbones_are_built_and_loaded_in_float32_whatever_dtype_their_config_records(tmp_path):
    """fp16 weights on a CPU are slow and break bf16 autocast (LayerNorm refuses the mix), so they load as fp32."""
    from transformers import BertConfig

    from mamba_pyserini.modeling.backbone import build_backbone, load_backbone

    config = BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                        dtype="float16")
    assert {p.dtype for p in build_backbone(config).parameters()} == {torch.float32}
    build_backbone(config).half().save_pretrained(tmp_path)
    loaded = load_backbone(str(tmp_path))
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(loaded(input_ids=torch.tensor([[1, 2, 3]])).last_hidden_state.float()).all()


@pytest.mark.parametrize("kind", ["cross-encoder", "bi-encoder"])
def test_the_compiled_cpu_mixer_gives_the_bundled_models_the_chunk_scans_scores(kind, monkeypatch):
    """On a real query's bundled DL19 candidates, in padded batches of mixed lengths, in fp32."""
    import gzip
    import json

    from mamba_pyserini.candidates import CANDIDATES_DIR

    monkeypatch.setenv("MAMBA_PYSERINI_FP32", "1")
    with gzip.open(CANDIDATES_DIR / "bm25.dl19-passage.json.gz", "rt") as f:
        entry = json.load(f)[0]
    pairs = [(entry["query"], hit["content"]) for hit in entry["hits"][::3]]
    model = load_model("default", kind=kind)
    scores = {}
    for compiled in ("1", "0"):
        monkeypatch.setenv("MAMBA_PYSERINI_CPU_MIXER", compiled)
        scores[compiled] = model.predict(pairs, batch_size=8)
    assert np.ptp(scores["0"]) > 0.01  # scores that rank
    np.testing.assert_allclose(scores["1"], scores["0"], atol=1e-5, rtol=0)


def test_the_bundled_models_are_a_bimamba2_cross_encoder_and_bi_encoder_under_24m_parameters_each():
    from mamba_pyserini import MambaBiEncoder, MambaCrossEncoder

    cross, bi = load_model("default", kind="cross-encoder"), load_model("default")  # the default: the bi-encoder
    assert (cross.KIND, cross.backbone.config.model_type, cross.config.pooling) == ("cross-encoder", "bimamba2", "pair")
    assert (bi.KIND, bi.backbone.config.model_type) == ("bi-encoder", "bimamba2")
    assert isinstance(MambaBiEncoder.from_pretrained("default"), MambaBiEncoder)  # 'default' is per kind
    assert isinstance(MambaCrossEncoder.from_pretrained("default"), MambaCrossEncoder)
    for model in (cross, bi):
        assert sum(p.numel() for p in model.parameters()) < 24_000_000
    query, docs = "what is the capital of france", ["Paris is the capital of France.",
                                                    "The black mamba is a venomous snake."]
    scores = cross.predict([(query, d) for d in docs])
    assert scores[0] > scores[1]
    q, d = bi.encode_queries([query]), bi.encode_documents(docs)
    assert (q @ d.T)[0, 0] > (q @ d.T)[0, 1]
