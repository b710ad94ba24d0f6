"""MambaReranker's interpolation with the first stage: per-query z-scores at a weight, the model's recommended weight
per kind of first stage, and the search CLI that applies it (tiny random-init models, real trec_eval)."""
import json
import statistics

import pytest
from click.testing import CliRunner

from conftest import FIXTURES, make_cross_encoder
from mamba_pyserini.modeling.auto import load_model
from mamba_pyserini.modeling.config import MambaRankerConfig
from mamba_pyserini.reranker import MambaReranker, first_stage_kind
from mamba_pyserini.runs import Hit, read_run
from mamba_pyserini.search import main

TEXTS = {f"d{i}": t for i, t in enumerate(["fleas live a year", "anthropology of the environment", "a flea's life",
                                           "the life cycle of the cat flea", "cats and dogs", "river deltas"])}
RUN = {"q": [Hit(f"d{i}", 10.0 - i * i) for i in range(6)]}  # first-stage scores 10, 9, 6, 1, -6, -15


@pytest.mark.parametrize("name, kind", [
    ("bm25-default", "bm25"), ("BM25", "bm25"), ("bm25-k1_0.82-b_0.68", "bm25"), ("bm25-default+rm3", "bm25-rm3"),
    ("bm25-rm3-default", "bm25-rm3"), ("bm25-k1_0.9-b_0.4+rm3", "bm25-rm3"), ("bm25-default+tiny.rrf", "other"),
    ("Anserini", "other"), ("splade-pp-ed", "other"), ("bm25-rm3-default.tiny", "other")])
def test_the_kind_of_first_stage_comes_from_its_condition(name, kind):
    assert first_stage_kind(name) == kind


def z(values):
    mean, spread = statistics.fmean(values), statistics.pstdev(values)
    return [(v - mean) / spread for v in values]


def test_the_weight_interpolates_z_scores_over_the_reranked_hits(neox_tokenizer):
    model = make_cross_encoder("mamba2", neox_tokenizer, max_length=64)
    depth = 4
    model_scores = dict(zip(list(TEXTS)[:depth], model.predict([("flea life", TEXTS[f"d{i}"]) for i in range(depth)])))
    first = {h.docid: h.score for h in RUN["q"][:depth]}
    for weight in (0.0, 0.3, 1.0):
        hits = MambaReranker(model, depth=depth, weight=weight).rerank_run({"q": "flea life"}, RUN, TEXTS)["q"]
        zm, zf = dict(zip(model_scores, z(list(model_scores.values())))), dict(zip(first, z(list(first.values()))))
        expected = {d: weight * zm[d] + (1 - weight) * zf[d] if weight < 1 else float(model_scores[d])
                    for d in model_scores}
        assert {h.docid: h.score for h in hits[:depth]} == pytest.approx(expected, abs=1e-5)
        assert [h.docid for h in hits[:depth]] == sorted(expected, key=lambda d: -expected[d])
        assert [h.docid for h in hits[depth:]] == ["d4", "d5"]  # below the depth: the first stage's order
    at_zero = MambaReranker(model, depth=depth, weight=0.0).rerank_run({"q": "flea life"}, RUN, TEXTS)["q"]
    assert [h.docid for h in at_zero] == [h.docid for h in RUN["q"]]
    with pytest.raises(ValueError, match="between 0 and 1"):
        MambaReranker(model, weight=1.5)


def test_the_model_recommends_a_weight_per_kind_of_first_stage(neox_tokenizer, minilm):
    model = make_cross_encoder("mamba2", neox_tokenizer, rerank_weights={"bm25": 0.8, "other": 0.4})
    reranker = MambaReranker(model)
    assert [reranker.recommended_weight(n) for n in ("bm25-default", "bm25-default+rm3", "my-splade-run")] == \
        [0.8, 1.0, 0.4]
    assert MambaReranker(load_model(minilm)).recommended_weight("Anserini") == 1.0
    default = MambaReranker.from_pretrained("default")
    assert 0 < default.recommended_weight("other") < 1  # the bundled default does not lower a strong first stage
    for weights in ({"splade": 0.5}, {"bm25": 1.5}, {"bm25": "high"}):
        with pytest.raises(ValueError, match="rerank weight"):
            MambaRankerConfig(rerank_weights=weights)


def test_search_applies_the_recommended_weight_unless_told(neox_tokenizer, tmp_path):
    path = tmp_path / "tiny"
    make_cross_encoder("mamba2", neox_tokenizer, max_length=128, rerank_weights={"bm25": 0.5}).save_pretrained(path)
    runs = {}
    for name, extra in (("recommended", []), ("alone", ["--rerank-weight", "1"]), ("first", ["--rerank-weight", "0"])):
        out = tmp_path / f"{name}.txt"
        result = CliRunner().invoke(main, ["--topics", "dl19", "--reranker", str(path), "--rerank-depth", "10",
                                           "--batch-size", "64", "--output", str(out), *extra])
        assert result.exit_code == 0, result.output
        runs[name] = (read_run(out), json.loads((tmp_path / f"{name}.txt.json").read_text()),
                      {line.split()[5] for line in out.read_text().splitlines()})
    assert runs["recommended"][1]["reranker"]["weight"] == 0.5
    assert runs["recommended"][1]["reranker"]["first_stage_kind"] == "bm25"
    assert runs["recommended"][2] == {"bm25-default.tiny.w0.5"} and runs["alone"][2] == {"bm25-default.tiny"}
    bm25 = read_run(FIXTURES / "pyserini.bm25.dl19-passage.txt")
    assert all([h.docid for h in runs["first"][0][q]] == [h.docid for h in bm25[q]] for q in bm25)
    assert runs["recommended"][0] != runs["alone"][0] != runs["first"][0]
