"""Inside Anserini/Pyserini workflows: their own CLIs' runs reranked by `rerank` (FirstP, MaxP), and the DataFrame
pipeline API."""
from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import REPO
from mamba_pyserini import MambaCrossEncoder
from mamba_pyserini.pyserini_compat import pyserini_major
from mamba_pyserini.rerank import main as rerank_main
from mamba_pyserini.reranker import segments
from mamba_pyserini.runs import read_run
from mamba_pyserini.texts import read_texts

CACM_TOPICS = REPO / "collections" / "topics-and-qrels" / "topics.cacm.txt"


@pytest.fixture(scope="module")
def searchcollection_run(cacm_index, tmp_path_factory):
    """BM25 top-20 written by Anserini's own SearchCollection (run through with_jvm); None where it cannot run offline:
    Anserini 2's SearchCollection reads its catalogue of prebuilt indexes from GitHub even for a local index."""
    out = tmp_path_factory.mktemp("anserini") / "run.anserini.bm25.cacm.txt"
    proc = subprocess.run([sys.executable, "-m", "mamba_pyserini.with_jvm", "io.anserini.search.SearchCollection",
                           "-index", str(cacm_index), "-topics", str(CACM_TOPICS), "-topicReader", "Cacm", "-output",
                           str(out), "-bm25", "-hits", "20"], cwd=REPO, capture_output=True, text=True)
    if proc.returncode and pyserini_major() >= 2 and "Failed to fetch prebuilt index metadata" in proc.stderr:
        # with_jvm reports it in one line, not Java's stack
        assert proc.stderr.splitlines()[-1].startswith("Error: io.anserini.search.SearchCollection: java.lang.")
        return None
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def pyserini_run(cacm_index, tmp_path_factory):
    """The same BM25 top-20 written by Pyserini's own CLI (run through with_jvm)."""
    out = tmp_path_factory.mktemp("pyserini") / "run.pyserini.bm25.cacm.txt"
    subprocess.run([sys.executable, "-m", "mamba_pyserini.with_jvm", "pyserini.search.lucene", "--index",
                    str(cacm_index), "--topics", str(CACM_TOPICS), "--output", str(out), "--bm25", "--hits", "20"],
                   check=True, cwd=REPO, capture_output=True)
    return out


@pytest.fixture(scope="module")
def anserini_run(searchcollection_run, pyserini_run):
    """A run written by the host's own tools: SearchCollection's where it runs, else Pyserini's CLI's."""
    return searchcollection_run or pyserini_run


def test_pyserinis_cli_and_anserinis_searchcollection_write_the_same_run(searchcollection_run, pyserini_run):
    if searchcollection_run is None:
        pytest.skip("Anserini 2's SearchCollection needs a network to read its prebuilt-index catalogue")
    pyserini, anserini = read_run(pyserini_run), read_run(searchcollection_run)
    assert len(pyserini) == 64 and {q: [h.docid for h in hits] for q, hits in pyserini.items()} == \
        {q: [h.docid for h in hits] for q, hits in anserini.items()}


@pytest.mark.parametrize("mode", ["firstp", "maxp"])
def test_rerank_an_anserini_run_in_firstp_and_maxp_modes(mode, cacm_index, anserini_run, tiny_checkpoints,
                                                         tmp_path):
    out = tmp_path / "reranked.txt"
    result = CliRunner().invoke(rerank_main, [
        "--run", str(anserini_run), "--index", str(cacm_index), "--topics", "cacm", "--reranker",
        str(tiny_checkpoints["mamba"]), "--rerank-depth", "3", "--doc-mode", mode, "--segment-length", "40",
        "--segment-stride", "20", "--max-length", "512", "--output", str(out), "--run-tag", f"tiny-{mode}"])
    assert result.exit_code == 0, result.output
    assert "MAP" in result.output  # trec_eval ran on it
    lines = out.read_text().splitlines()
    assert all(line.split()[5] == f"tiny-{mode}" for line in lines)
    before, after = read_run(anserini_run), read_run(out)
    qid = "1"
    top = [h.docid for h in after[qid][:3]]
    assert set(top) == {h.docid for h in before[qid][:3]}
    assert [h.docid for h in after[qid][3:]] == [h.docid for h in before[qid][3:]]
    model = MambaCrossEncoder.from_pretrained(tiny_checkpoints["mamba"], max_length=512)
    from mamba_pyserini.topics import load_topics

    query = load_topics("cacm").queries[qid]
    text = read_texts(str(cacm_index), {top[0]})[top[0]]
    parts = segments(text, 40, 20) if mode == "maxp" else [text]
    expected = max(model.predict([(query, p) for p in parts]))
    assert after[qid][0].score == pytest.approx(float(expected), abs=1e-4)


def test_segments_cover_the_text_with_overlap():
    words = [f"w{i}" for i in range(25)]
    parts = segments(" ".join(words), 10, 5)
    assert parts == [" ".join(words[s:s + 10]) for s in (0, 5, 10, 15)]  # the last window reaches the end
    assert segments("short text", 10, 5) == ["short text"] and segments("", 10, 5) == [""]


def test_rerank_refuses_a_missing_run_and_a_stride_longer_than_the_window(tmp_path, tiny_checkpoints, cacm_index,
                                                                         anserini_run):
    runner = CliRunner()
    result = runner.invoke(rerank_main, ["--run", str(tmp_path / "none.txt"), "--index", str(cacm_index), "--topics",
                                         "cacm", "--reranker", str(tiny_checkpoints["mamba"])])
    assert result.exit_code == 2 and "run file not found" in result.output
    result = runner.invoke(rerank_main, ["--run", str(anserini_run), "--index", str(cacm_index), "--topics", "cacm",
                                         "--reranker", str(tiny_checkpoints["mamba"]), "--doc-mode", "maxp",
                                         "--segment-length", "10", "--segment-stride", "20",
                                         "--output", str(tmp_path / "o.txt")])
    assert result.exit_code == 2 and "segment stride 20" in result.output and not (tmp_path / "o.txt").exists()


@pytest.mark.slow
@pytest.mark.host
def test_dataframe_pipeline_composes_stages(cacm_index, tiny_checkpoints, tiny_bi_encoder, tmp_path):
    from mamba_pyserini.pipeline import Bm25, Candidates, Dense, Fuse, Rerank, evaluate, to_run, topics_frame
    from mamba_pyserini.reranker import MambaReranker

    topics = topics_frame("dl19")
    bm25 = Candidates("dl19")(topics)
    assert list(bm25.columns) == ["qid", "query", "docid", "score", "rank", "text"] and len(bm25) == 4300
    assert round(evaluate(bm25, "dl19")["nDCG@10"], 4) == 0.5058
    topic_file = tmp_path / "my-topics.tsv"  # a user's own topics, scored from Python
    topic_file.write_text("".join(f"{q}\t{text}\n" for q, text in zip(topics["qid"], topics["query"])))
    qrels = REPO / "collections/topics-and-qrels/qrels.dl19-passage.txt"
    assert evaluate(bm25, str(topic_file), qrels=str(qrels)) == evaluate(bm25, "dl19")
    few = topics.head(2)
    model = MambaCrossEncoder.from_pretrained(tiny_checkpoints["mamba"])
    reranked = (Candidates("dl19") >> Rerank(model, depth=5))(few)
    run, queries = to_run(Candidates("dl19")(few))
    texts = dict(zip(bm25["docid"], bm25["text"]))
    direct = MambaReranker(model, 5).rerank_run(queries, run, texts)
    got = to_run(reranked)[0]
    assert {q: [h.docid for h in hits] for q, hits in got.items()} == \
        {q: [h.docid for h in hits] for q, hits in direct.items()}
    assert [h.score for h in got[few.qid[0]]] == pytest.approx([h.score for h in direct[few.qid[0]]], abs=1e-6)
    from mamba_pyserini.encode import main as encode_main
    from mamba_pyserini.runs import fuse

    faiss_dir = tmp_path / "faiss"
    assert CliRunner().invoke(encode_main, ["--model", str(tiny_bi_encoder), "--corpus",
                                            str(REPO / "collections/cacm/cacm.jsonl.gz"), "--output",
                                            str(faiss_dir)]).exit_code == 0
    cacm = topics_frame("cacm").head(3)
    sparse, dense = Bm25(str(cacm_index), hits=10), Dense(str(tiny_bi_encoder), str(faiss_dir), hits=10)
    fused = Fuse(sparse, dense, k=10)(cacm)
    assert to_run(fused)[0] == fuse(to_run(sparse(cacm))[0], to_run(dense(cacm))[0], "rrf", 10)
    assert set(fused["qid"]) == set(cacm["qid"]) and fused.groupby("qid").size().max() <= 10
