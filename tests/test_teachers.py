"""Teachers: SPLADE checkpoints (a tiny random-init BertForMaskedLM), sentence-transformers prompts, and ensembles
(per-query z-scores summed with weights, on the first teacher's scale) for groups over a pool and for given groups."""
import json
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mamba_pyserini.modeling.auto import checkpoint_kind, load_model
from mamba_pyserini.reranker import MambaReranker
from mamba_pyserini.runs import Hit
from mamba_pyserini.training.data import read_groups
from mamba_pyserini.training.teachers import combine, ensemble_groups, score_groups

PASSAGES = ["the black mamba is a venomous snake", "paris is the capital of france", "rice is cooked in water",
            "the flu causes fever and cough", "a snake sheds its skin", "the eiffel tower is in paris",
            "boil the rice for twenty minutes", "mamba models scan sequences", "fever is a symptom",
            "venom of the mamba acts fast", "france borders spain", "state space models for retrieval"]
QUERIES = ["what is a mamba", "capital of france", "how to cook rice", "symptoms of flu"]


@pytest.fixture(scope="module")
def splade(tmp_path_factory, bert_tokenizer):
    """A saved tiny random-init BertForMaskedLM: SPLADE's form."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("splade") / "tiny-splade"
    config = BertConfig(vocab_size=len(bert_tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertForMaskedLM(config).save_pretrained(path)
    bert_tokenizer.save_pretrained(path)
    return path


def splade_vectors(path, texts):
    """SPLADE by its definition, one text at a time: max over tokens of log(1 + relu(MLM logits))."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model, tokenizer = AutoModelForMaskedLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    with torch.no_grad():
        return torch.stack([torch.log1p(torch.relu(model(**tokenizer(t, return_tensors="pt")).logits[0])).max(0).values
                            for t in texts])


def test_a_masked_language_model_is_a_splade_encoder_that_scores_and_reranks(splade):
    model = load_model(splade)
    assert checkpoint_kind(splade) == model.KIND == "splade"
    pairs = [(q, p) for q in QUERIES[:2] for p in PASSAGES[:5]]
    q, p = splade_vectors(splade, QUERIES[:2]), splade_vectors(splade, PASSAGES[:5])
    expected = (q @ p.T).flatten().numpy()
    np.testing.assert_allclose(model.predict(pairs, batch_size=3), expected, rtol=1e-4, atol=1e-4)
    vectors = model.encode_documents(PASSAGES[:5])
    assert vectors.layout == torch.sparse_csr and vectors.shape == p.shape
    torch.testing.assert_close(vectors.to_dense(), p, rtol=1e-4, atol=1e-4)
    run = {"q": [Hit(f"d{i}", 10.0 - i) for i in range(5)]}
    texts = {f"d{i}": PASSAGES[i] for i in range(5)}
    reranked = MambaReranker(model, depth=5).rerank_run({"q": QUERIES[0]}, run, texts)
    best = int(np.argmax(expected[:5]))
    assert reranked["q"][0].docid == f"d{best}"


def test_sentence_transformers_prompts_become_the_query_and_document_prefixes(tmp_path, minilm):
    path = tmp_path / "prompted"
    shutil.copytree(minilm, path)
    (path / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": None}))
    plain, prompted = load_model(minilm), load_model(path)
    assert (plain.config.query_prefix, plain.config.document_prefix) == ("", "")
    assert (prompted.config.query_prefix, prompted.config.document_prefix) == ("query: ", "passage: ")
    np.testing.assert_allclose(prompted.encode_queries(["rice"]), plain.encode_queries(["query: rice"]), atol=1e-5)
    np.testing.assert_allclose(prompted.encode_documents(["rice"]), plain.encode_documents(["passage: rice"]),
                               atol=1e-5)


rows = arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(2, 9)),
              elements=st.floats(-50, 50, allow_nan=False, allow_infinity=False))


@settings(max_examples=60, deadline=None)
@given(a=rows, scale=st.floats(0.1, 10), shift=st.floats(-5, 5))
def test_an_ensemble_is_its_first_teachers_scale_and_ignores_each_teachers_scale(a, scale, shift):
    np.testing.assert_allclose(combine([a]), a.astype(np.float32))
    # a teacher joined by itself, or by an affine copy of itself, ranks and scores as it does alone
    spread = a.std(axis=1) > 1e-3
    np.testing.assert_allclose(combine([a, a * scale + shift])[spread], a[spread], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(combine([a, -a], [1.0, 0.0])[spread], a[spread], rtol=1e-4, atol=1e-3)


def test_an_ensemble_sums_z_scores_with_its_weights():
    a, b = np.array([[1.0, 2.0, 3.0, 4.0]]), np.array([[40.0, 10.0, 30.0, 20.0]])
    z = lambda x: (x - x.mean()) / x.std()  # noqa: E731
    total = z(z(a) + 3 * z(b))
    np.testing.assert_allclose(combine([a, b], [1, 3]), total * a.std() + a.mean(), rtol=1e-5)
    assert list(np.argsort(-combine([a, b], [1, 3])[0])) == [0, 2, 3, 1]
    for weights, message in (([1.0], "1 teacher weights for 2"), ([-1.0, 2.0], "non-negative"),
                             ([0.0, 0.0], "not all zero")):
        with pytest.raises(ValueError, match=message):
            combine([a, b], weights)


@pytest.mark.slow
def test_ensemble_groups_rank_the_pool_by_the_weighted_z_scores(minilm, splade, tiny_checkpoints):
    teachers = [load_model(minilm), load_model(splade)]
    indices, scores = ensemble_groups(teachers, [1.0, 2.0], QUERIES, PASSAGES, depth=4, n_random=3, seed=1,
                                      device="cpu")
    mini = teachers[0].encode_queries(QUERIES) @ teachers[0].encode_documents(PASSAGES).T
    sparse = (splade_vectors(splade, QUERIES) @ splade_vectors(splade, PASSAGES).T).numpy()
    full = combine([mini, sparse], [1.0, 2.0])
    assert indices.shape == scores.shape == (4, 7)
    for row, s, f in zip(indices, scores, full):
        assert list(row[:4]) == list(np.argsort(-f, kind="stable")[:4])
        assert not set(row[4:]) & set(row[:4]) and len(set(row[4:])) == 3
        np.testing.assert_allclose(s, f[row], rtol=1e-3, atol=1e-3)
    cross_encoder = load_model(tiny_checkpoints["mamba2"])
    with pytest.raises(ValueError, match="cannot rank a whole pool"):
        ensemble_groups([cross_encoder], None, QUERIES, PASSAGES, depth=4, n_random=3)


def test_score_teacher_scores_groups_with_an_ensemble(tmp_path, minilm, splade):
    from click.testing import CliRunner

    from mamba_pyserini.train import main

    data = tmp_path / "groups.jsonl"
    data.write_text("".join(json.dumps({"query": q, "pos": [PASSAGES[i]], "neg": PASSAGES[i + 1:i + 5]}) + "\n"
                            for i, q in enumerate(QUERIES)))
    args = ["score-teacher", "--teacher", str(minilm), "--teacher", str(splade), "--teacher-weight", "1",
            "--teacher-weight", "0.5", "--data", str(data), "--output", str(tmp_path / "scored.jsonl")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    scored = read_groups(tmp_path / "scored.jsonl")
    teachers = [load_model(minilm), load_model(splade)]
    expected = score_groups(teachers, [1.0, 0.5], read_groups(data))
    for g, e in zip(scored, expected):
        pairs = [(g.query, p) for p in g.positives + g.negatives]
        each = [t.predict(pairs)[None] for t in teachers]
        assert g.positive_scores + g.negative_scores == pytest.approx(combine(each, [1.0, 0.5])[0].tolist(), abs=1e-4)
        assert g.positive_scores + g.negative_scores == pytest.approx(e.positive_scores + e.negative_scores, abs=1e-4)
    result = CliRunner().invoke(main, args[:7] + ["--data", str(data), "--output", str(tmp_path / "x.jsonl")])
    assert result.exit_code == 2 and result.output == "Error: 1 --teacher-weight for 2 --teacher\n"
    assert not (tmp_path / "x.jsonl").exists()


def test_groups_on_disk_made_by_other_teachers_or_settings_are_refused(tmp_path):
    from mamba_pyserini.training.distill import GROUPS_FILE, Recipe, build_groups

    recipe = Recipe(depth=2, n_random=1)
    made_by = {"teachers": ["a", "b"], "weights": [1.0, 1.0], "depth": 2, "n_random": 1, "seed": 42}
    np.savez(tmp_path / GROUPS_FILE, indices=np.array([[0, 1, 2], [2, 1, 0]], dtype=np.int32),
             scores=np.ones((2, 3), dtype=np.float32), teachers=np.array(json.dumps(made_by)))
    groups = build_groups(tmp_path, ["a", "b"], None, QUERIES[:2], PASSAGES[:3], recipe, "cpu")
    assert [g.positives for g in groups] == [[PASSAGES[0]], [PASSAGES[2]]]
    for teachers, weights, other in ((["a"], None, recipe), (["a", "b"], [1.0, 2.0], recipe),
                                     (["a", "b"], None, Recipe(depth=2, n_random=1, seed=7))):
        with pytest.raises(ValueError, match="built for other data, teachers or settings"):
            build_groups(tmp_path, teachers, weights, QUERIES[:2], PASSAGES[:3], other, "cpu")
