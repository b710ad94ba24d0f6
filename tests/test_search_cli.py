"""`python -m mamba_pyserini.search` end to end: bundled BM25, tiny Mamba rerankers, real trec_eval."""
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import FIXTURES, REPO
from mamba_pyserini.evaluation import METRICS
from mamba_pyserini.runs import read_run
from mamba_pyserini.search import main


def search(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def metrics(output: str) -> dict[str, float]:
    rows = [line.split() for line in output.splitlines() if len(line.split()) == 2]
    return {name: float(value) for name, value in rows if name in METRICS}


@pytest.mark.parametrize("topics, ndcg", [("dl19", 0.5058), ("dl20", 0.4796)])
def test_bundled_bm25_is_pyserinis_run(topics, ndcg, tmp_path):
    out = tmp_path / "run.txt"
    result = search("--topics", topics, "--reranker", "none", "--output", str(out))
    assert result.exit_code == 0, result.output
    values = metrics(result.stdout)
    assert values["nDCG@10"] == ndcg
    assert set(values) == {"nDCG@10", "MRR@10", "MAP", "R@100"}
    key = {"dl19": "dl19-passage", "dl20": "dl20-passage"}[topics]
    pyserini = read_run(FIXTURES / f"pyserini.bm25.{key}.txt")
    ours = read_run(out)
    assert [h.docid for q in pyserini for h in pyserini[q]] == [h.docid for q in pyserini for h in ours[q]]
    sidecar = json.loads((out.parent / "run.txt.json").read_text())
    assert sidecar["metrics"]["nDCG@10"] == ndcg and sidecar["first_stage"] == "bm25-default"


@pytest.mark.parametrize("family, depth", [pytest.param("mamba", "100", marks=pytest.mark.slow), ("mamba2", "20")])
def test_tiny_mamba_reranks_dl19_end_to_end(family, depth, tiny_checkpoints, tmp_path):
    out = tmp_path / f"{family}.txt"
    result = search("--topics", "dl19", "--reranker", str(tiny_checkpoints[family]), "--rerank-depth", depth,
                    "--batch-size", "64", "--output", str(out))
    assert result.exit_code == 0, result.output
    run, bm25 = read_run(out), read_run(FIXTURES / "pyserini.bm25.dl19-passage.txt")
    assert len(run) == 43
    depth = int(depth)
    for qid, hits in run.items():
        assert len(hits) == 100
        assert {h.docid for h in hits[:depth]} == {h.docid for h in bm25[qid][:depth]}
        assert [h.docid for h in hits[depth:]] == [h.docid for h in bm25[qid][depth:]]
    assert any([h.docid for h in run[q]] != [h.docid for h in bm25[q]] for q in run)  # it did rerank
    assert 0.0 < metrics(result.stdout)["nDCG@10"] < 1.0


def test_rerank_a_run_file_with_texts_from_a_collection(tiny_checkpoints, tmp_path):
    run_file, collection = tmp_path / "first.txt", tmp_path / "docs.tsv"
    run_file.write_text("1 Q0 d1 1 2.0 bm25\n1 Q0 d2 2 1.0 bm25\n2 Q0 d2 1 3.0 bm25\n")
    collection.write_text("d1\tfleas live a year\nd2\tthe environment in anthropology\n")
    topics = tmp_path / "topics.tsv"
    topics.write_text("1\tflea life\n2\tanthropology\n")
    out = tmp_path / "reranked.txt"
    result = search("--topics", str(topics), "--run", str(run_file), "--index", str(collection),
                    "--reranker", str(tiny_checkpoints["mamba2"]), "--output", str(out), "--output-format", "msmarco",
                    "--run-tag", "mine")
    assert result.exit_code == 0, result.output
    assert "no metrics" in result.stderr
    sidecar = json.loads((tmp_path / "reranked.txt.json").read_text())
    assert sidecar["metrics"] == {} and sidecar["reranker"]["template"] == "document-query"
    from mamba_pyserini import MambaCrossEncoder

    s1, s2 = MambaCrossEncoder.from_pretrained(tiny_checkpoints["mamba2"]).predict(
        [("flea life", "fleas live a year"), ("flea life", "the environment in anthropology")])
    first, second = ("d1", "d2") if s1 > s2 else ("d2", "d1")
    assert out.read_text().splitlines() == [f"1\t{first}\t1", f"1\t{second}\t2", "2\td2\t1"]


def test_reranker_none_is_first_stage_only(tmp_path):
    result = search("--topics", "dl20", "--reranker", "none", "--output", str(tmp_path / "r.txt"))
    assert result.exit_code == 0
    assert metrics(result.stdout)["nDCG@10"] == 0.4796


def _bad(tmp_path):
    topics = tmp_path / "empty.tsv"
    topics.write_text("1\tok\n2\t\n")
    run = tmp_path / "bad.run"
    run.write_text("264014 Q0 5611210 1 15.78 rank\n264014 Q0 6641238 two 15.09 rank\n")
    notckpt = tmp_path / "notckpt"
    notckpt.mkdir()
    return {
        "unknown topic": (["--topics", "dl42"], "unknown topics 'dl42'"),
        "malformed run line": (["--topics", "dl19", "--run", str(run), "--index", str(run)], "bad.run:2: malformed"),
        "missing file": (["--topics", "dl19", "--run", str(tmp_path / "none.txt"), "--index", "x"],
                         "run file not found"),
        "empty query": (["--topics", str(topics)], "empty query for topic 2"),
        "not a checkpoint": (["--topics", "dl19", "--reranker", str(notckpt)], "is not a model checkpoint"),
        "no candidates": (["--topics", "dl19-doc"], "no bundled bm25 candidates for topics 'dl19-doc'"),
        "unknown index": (["--topics", "dl19", "--index", "no-such-index"], "unknown index 'no-such-index'"),
    }


@pytest.mark.parametrize("case", [
    "unknown topic", "malformed run line", "missing file", "empty query", "not a checkpoint", "no candidates",
    "unknown index"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path):
    args, message = _bad(tmp_path)[case]
    out = tmp_path / "out" / "run.txt"
    result = search(*args, "--output", str(out))
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert not out.parent.exists()


def test_passage_longer_than_the_model_allows(tiny_checkpoints, tmp_path):
    """Documents are cut to --max-length; a query that cannot fit, or a length past the model's, is refused."""
    topics = tmp_path / "long.tsv"
    topics.write_text("1\t" + "very long query " * 60 + "\n")
    run = tmp_path / "r.txt"
    run.write_text("1 Q0 d 1 1.0 x\n")
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "d", "contents": "' + "passage text " * 5000 + '"}\n')
    common = ["--topics", str(topics), "--run", str(run), "--index", str(docs), "--output", str(tmp_path / "o.txt")]
    result = search(*common, "--reranker", str(tiny_checkpoints["mamba"]))
    assert result.exit_code == 2 and "leaves no room for the document within max length 128" in result.stderr
    topics.write_text("1\tshort query\n")
    assert search(*common, "--reranker", str(tiny_checkpoints["mamba"])).exit_code == 0  # the passage is cut


def test_help_imports_neither_torch_nor_java():
    code = ("import sys; from click.testing import CliRunner; from mamba_pyserini.search import main; "
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0 and '--rerank-depth' in r.output; "
            "print(sorted(m for m in ('torch', 'jnius', 'transformers', 'pyserini') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == "[]"


def test_a_run_with_queries_outside_the_topics_is_refused(tmp_path):
    run, docs = tmp_path / "r.txt", tmp_path / "d.tsv"
    run.write_text("999999 Q0 d 1 1.0 x\n")
    docs.write_text("d\ttext\n")
    result = search("--topics", "dl19", "--run", str(run), "--index", str(docs), "--output", str(tmp_path / "o.txt"))
    assert result.exit_code == 2
    assert "1 query id(s) of the run are not in dl19-passage, e.g. '999999'" in result.stderr
    assert not (tmp_path / "o.txt").exists()
