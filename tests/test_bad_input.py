"""Bad input through the real CLIs, one subprocess each: one ``Error: file:line: ...`` line, exit code 2, nothing
written (no output, no temporary file); and the worst value of every numeric option."""
from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, REPO

TOPICS = "1\tflea life\n2\tanthropology\n"
RUN = "1 Q0 d1 1 2.0 bm25\n1 Q0 d2 2 1.0 bm25\n2 Q0 d2 1 3.0 bm25\n"
DOCS = "d1\tfleas live a year\nd2\tthe environment in anthropology\n"
GROUP = {"query": "q", "pos": ["a positive"], "neg": ["a negative", "another"]}


def cli(module: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"mamba_pyserini.{module}", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def gz(path: Path, content: str, cut: int | None = None) -> Path:
    data = gzip.compress(content.encode())
    return write(path, data[:cut] if cut else data)


def _search_inputs(d: Path, topics=TOPICS, run=RUN, docs=DOCS, docs_name="docs.tsv"):
    """``search`` over a run file and a collection, first stage only unless a test gives a reranker."""
    t, r = write(d / "topics.tsv", topics), write(d / "first.txt", run)
    c = write(d / docs_name, docs) if isinstance(docs, (str, bytes)) else docs(d / docs_name)
    return ["--topics", t, "--run", r, "--index", c]


# case -> (module, arguments built in a directory, the words the one error line must hold)
CASES = {
    "topic file, invalid UTF-8": ("search", lambda d: _search_inputs(d, topics=b"1\tfl\xffea\n"),
                                  "topics.tsv:1: invalid UTF-8"),
    "JSON topics, invalid UTF-8": ("search", lambda d: _json_topics(d, b'{"qid": "1", "title": "a\xff"}\n'),
                                   "t.json:1: invalid UTF-8"),
    "topic file, a qid twice": ("search", lambda d: _search_inputs(d, topics=TOPICS + "1\tagain\n"),
                                "topics.tsv:3: topic id '1' appears twice (lines 1 and 3)"),
    "JSON topics, title null": ("search", lambda d: _json_topics(d, b'{"qid": "1", "title": null}\n'),
                                't.json:1: malformed topic line: "qid" must be a string'),
    "run file, a docid twice": ("search", lambda d: _search_inputs(d, run=RUN + "1 Q0 d1 3 0.5 bm25\n"),
                                "first.txt:4: query and docid ('1', 'd1') appears twice (lines 1 and 4)"),
    "run file, invalid UTF-8": ("search", lambda d: _search_inputs(d, run=RUN.encode() + b"2 Q0 \xfe 2 1.0 x\n"),
                                "first.txt:4: invalid UTF-8"),
    "collection, an id twice": ("search", lambda d: _reranked(d, docs=DOCS + "d1\tagain\n"),
                                "docs.tsv:3: document id 'd1' appears twice (lines 1 and 3)"),
    "collection, contents null": ("search", lambda d: _reranked(
        d, docs='{"id": "d1", "contents": null}\n', docs_name="docs.jsonl"),
        'docs.jsonl:1: malformed collection line: "id" must be a string (or integer) and "contents" a string'),
    "gzip collection cut short": ("search", lambda d: _reranked(
        d, docs=lambda p: gz(p, DOCS * 200, cut=60), docs_name="docs.tsv.gz"), "docs.tsv.gz:"),
    ".jsonl.gz that is not gzip": ("search", lambda d: _reranked(
        d, docs='{"id": "d1", "contents": "x"}\n', docs_name="docs.jsonl.gz"), "docs.jsonl.gz:1: broken gzip data"),
    "malformed qrels": ("search", lambda d: _search_inputs(d) + ["--qrels", write(d / "q.txt", "1 0 d1\n")],
                        "q.txt:1: malformed qrels line"),
    "qrels, a judgement twice": ("search", lambda d: _search_inputs(d) + [
        "--qrels", write(d / "q.txt", "1 0 d1 1\n1 0 d1 2\n")],
        "q.txt:2: judgement of query and docid ('1', 'd1') appears twice"),
    "truncated safetensors": ("search", lambda d: _search_inputs(d) + ["--reranker", _broken_model(d, "truncate")],
                              "not a readable safetensors file"),
    "safetensors with a corrupt header": ("search", lambda d: _search_inputs(d) + [
        "--reranker", _broken_model(d, "header")], "not a readable safetensors file"),
    "--kernel fast where mamba_ssm cannot run": ("search", lambda d: _reranked(d) + ["--kernel", "fast"],
                                                 "--kernel fast: mamba_ssm's kernels cannot run on cpu"),
    "rerank: missing text source checked before the model loads": (
        "rerank", lambda d: ["--topics", write(d / "t.tsv", TOPICS), "--run", write(d / "r.txt", RUN), "--index",
                             d / "nowhere.jsonl"], "nowhere.jsonl"),
    "training JSONL, pos_scores not a list": ("train", lambda d: _training(
        d, json.dumps({**GROUP, "pos_scores": 3, "neg_scores": [1, 2]})),
        'groups.jsonl:1: "pos_scores" must be a list of finite numbers'),
    "training JSONL, pos a string": ("train", lambda d: _training(d, json.dumps({**GROUP, "pos": "a string"})),
                                     'groups.jsonl:1: "pos" must be a list of strings'),
    "training JSONL, query null": ("train", lambda d: _training(d, json.dumps({**GROUP, "query": None})),
                                   'groups.jsonl:1: "query" must be a string'),
    "training JSONL.gz, corrupt": ("train", lambda d: ["cross-encoder", "--model", "default", "--data", write(
        d / "g.jsonl.gz", gzip.compress(json.dumps(GROUP).encode() * 50)[:-12] + b"\x00" * 12)], "g.jsonl.gz:"),
    "mine-negatives, qrels with invalid UTF-8": ("train", lambda d: [
        "mine-negatives", "--run", write(d / "r.txt", RUN), "--qrels", write(d / "q.txt", b"1 0 d\xff 1\n")],
        "q.txt:1: invalid UTF-8"),
}


def _json_topics(d: Path, content: bytes) -> list:
    return ["--topics", write(d / "t.json", content), "--run", write(d / "r.txt", RUN), "--index",
            write(d / "c.tsv", DOCS)]


def _reranked(d: Path, **inputs) -> list:
    return _search_inputs(d, **inputs) + ["--reranker", "default"]


def _training(d: Path, line: str) -> list:
    return ["cross-encoder", "--model", "default", "--data", write(d / "groups.jsonl", line + "\n")]


def _broken_model(d: Path, how: str) -> Path:
    from mamba_pyserini.modeling.backbone import resolve_checkpoint

    model = d / "model"
    shutil.copytree(resolve_checkpoint("default"), model)
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:len(data) // 2] if how == "truncate" else b"\xff" * 8 + data[8:])
    return model


def _files(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path):
    module, build, message = CASES[case]
    args = build(tmp_path)
    out = tmp_path / "out"
    before = _files(tmp_path)
    result = cli(module, *args, "--output", out / "result" if module != "train" else out, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert _files(tmp_path) == before  # no output, no temporary file, no JVM crash log


@pytest.mark.parametrize("parent", ["file", "proc"])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(parent, tmp_path):
    blocker = write(tmp_path / "blocker", "a file")
    output = blocker / "run.txt" if parent == "file" else Path("/proc/mamba-pyserini/run.txt")
    for module, args in [("search", ["--topics", "dl19", "--reranker", "none"]),
                         ("train", ["cross-encoder", "--model", "default", "--data", FIXTURES / "train" /
                                    "flag-reranker.jsonl"])]:
        result = cli(module, *args, "--output", output, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith(f"Error: cannot write {output}"), result.stderr
        assert "training a" not in result.stderr  # refused before any work


def test_topic_files_with_a_byte_order_mark_or_crlf_read_as_plain_ones(tmp_path):
    """Accepted on purpose: Windows editors write both; the BOM is dropped the same way in every reader."""
    outputs = []
    for name, topics in [("plain", TOPICS), ("bom", "\ufeff" + TOPICS), ("crlf", TOPICS.replace("\n", "\r\n"))]:
        d = tmp_path / name
        d.mkdir()
        result = cli("search", *_search_inputs(d, topics=topics, run="\ufeff" + RUN), "--output", d / "r.txt",
                     cwd=d)
        assert result.returncode == 0, result.stderr
        outputs.append((d / "r.txt").read_text().replace(name, ""))
    assert outputs[0] == outputs[1] == outputs[2]


TRAIN = ["cross-encoder", "--model", "m", "--data", "d", "--output", "o"]
SEARCH = ["--topics", "dl19", "--index", "x"]
# (module, the command before the option, the option, its worst value)
NUMBERS = [
    ("search", SEARCH, "--k1", "-1"), ("search", SEARCH, "--b", "1.5"), ("search", SEARCH, "--fb-terms", "0"),
    ("search", SEARCH, "--fb-docs", "0"), ("search", SEARCH, "--original-query-weight", "2"),
    ("search", SEARCH, "--alpha", "-0.5"), ("search", SEARCH, "--hits", "0"), ("search", SEARCH, "--rerank-depth", "0"),
    ("search", SEARCH, "--rerank-weight", "1.5"), ("rerank", ["--run", "r", "--index", "x", "--topics", "dl19"],
                                                    "--rerank-weight", "-0.1"),
    ("search", SEARCH, "--batch-size", "0"), ("search", SEARCH, "--max-length", "4"),
    ("search", SEARCH, "--threads", "0"), ("search", SEARCH, "--relevance-level", "0"),
    ("rerank", ["--run", "r", "--index", "x", "--topics", "dl19"], "--segment-length", "0"),
    ("train", TRAIN, "--group-size", "1"), ("train", TRAIN, "--lr", "0"), ("train", TRAIN, "--epochs", "0"),
    ("train", TRAIN, "--save-steps", "0"), ("train", TRAIN, "--warmup-steps", "-1"),
    ("train", TRAIN, "--max-steps", "0"), ("train", TRAIN, "--lora-r", "0"),
    ("train", ["bi-encoder", *TRAIN[1:]], "--temperature", "0"),
    ("train", ["mine-negatives", "--run", "r", "--qrels", "q", "--output", "o"], "--negatives", "0"),
    ("encode", ["--output", "o"], "--batch-size", "0"),
    ("distill", ["--output", "o"], "--bi-steps", "0"), ("distill", ["--output", "o"], "--temperature", "0"),
    ("distill", ["--output", "o"], "--architecture", "transformer"),
    ("distill", ["--output", "o"], "--teacher-weight", "-1"),
]


def invoke(module: str, *args, cwd: Path):
    """A CLI in this process (for errors found before any work, where a fresh process adds nothing but seconds)."""
    import importlib
    import os

    from click.testing import CliRunner

    here = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(importlib.import_module(f"mamba_pyserini.{module}").main, list(map(str, args)))
    finally:
        os.chdir(here)


@pytest.mark.parametrize("module, before, option, value", NUMBERS, ids=[f"{m} {o}" for m, _, o, _ in NUMBERS])
def test_the_worst_value_of_each_numeric_option_is_a_usage_error(module, before, option, value, tmp_path):
    result = invoke(module, *before, option, value, cwd=tmp_path)
    assert result.exit_code == 2, result.stderr
    assert f"Invalid value for '{option}'" in result.stderr
    assert not any(tmp_path.iterdir())


def test_teacher_weights_that_do_not_pair_with_the_teachers_are_one_line_exit_2(tmp_path):
    result = invoke("distill", "--teacher", "a", "--teacher", "b", "--teacher-weight", "1", "--output", "o",
                    cwd=tmp_path)
    assert result.exit_code == 2 and result.stderr == "Error: 1 --teacher-weight for 2 --teacher\n"
    assert not any(tmp_path.iterdir())


def test_the_sidecar_names_the_command_to_rerun_and_what_the_numbers_depend_on(tmp_path):
    out = tmp_path / "r.txt"
    args = _search_inputs(tmp_path, run=RUN.replace("bm25", "my-first-stage")) + ["--reranker", "default"]
    result = cli("search", *args, "--qrels", write(tmp_path / "q.txt", "1 0 d1 1\n2 0 d2 2\n"), "--output", out,
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    sidecar = json.loads((tmp_path / "r.txt.json").read_text())
    assert sidecar["command"].startswith("python -m mamba_pyserini.search --topics ")
    assert sidecar["qrels"].endswith("q.txt") and sidecar["relevance_level"] == 1
    assert sidecar["provenance"]["kernel"] == "ref" and sidecar["provenance"]["precision"] in ("fp32", "bf16")
    assert sidecar["provenance"]["cpu_mixer"] is True and sidecar["provenance"]["versions"]["numba"]
    assert sidecar["provenance"]["versions"]["torch"]
    assert "(relevance >= 1 for MAP, R@100)" in result.stdout
    tags = {line.split()[5] for line in out.read_text().splitlines()}
    # named after what made it, not the file; an unknown first stage gets the default's weight for strong ones
    assert tags == {"my-first-stage.bimamba2-l6-bi-encoder.w0.4"} and sidecar["reranker"]["weight"] == 0.4


def test_a_graded_passage_qrels_file_counts_grade_2_as_pyserini_does(tmp_path):
    """A topic *file* with DL passage qrels gets Pyserini's -l 2, by the qrels file's name; --relevance-level
    overrides it."""
    qrels = REPO / "collections" / "topics-and-qrels" / "qrels.dl19-passage.txt"
    by_name = cli("search", "--topics", "dl19", "--reranker", "none", "--output", tmp_path / "a.txt", cwd=tmp_path)
    topics = write(tmp_path / "t.tsv", (REPO / "collections" / "topics-and-qrels" /
                                        "topics.dl19-passage.txt").read_text())
    as_file = cli("search", "--topics", topics, "--run", tmp_path / "a.txt", "--index", "unused", "--qrels", qrels,
                  "--output", tmp_path / "b.txt", cwd=tmp_path)
    level_1 = cli("search", "--topics", topics, "--run", tmp_path / "a.txt", "--index", "unused", "--qrels", qrels,
                  "--relevance-level", "1", "--output", tmp_path / "c.txt", cwd=tmp_path)
    assert by_name.returncode == as_file.returncode == level_1.returncode == 0, as_file.stderr + level_1.stderr
    assert by_name.stdout.splitlines()[1:] == as_file.stdout.splitlines()[1:]
    assert "relevance >= 2" in as_file.stdout and "relevance >= 1" in level_1.stdout
    assert as_file.stdout.splitlines()[3] != level_1.stdout.splitlines()[3]  # MAP moves with the level


# (module, arguments with one path that is not there, the words of the error)
MISSING = [
    ("search", ["--topics", "dl19", "--qrels", "none.txt"], "qrels file not found: none.txt"),
    ("search", ["--topics", "dl19", "--run", "none.txt", "--index", "x"], "run file not found: none.txt"),
    ("search", ["--topics", "dl19", "--dense", "default", "--faiss-index", "none"], "none"),
    ("rerank", ["--topics", "dl19", "--run", "none.txt", "--index", "x"], "run file not found: none.txt"),
    ("train", ["cross-encoder", "--model", "default", "--data", "none.jsonl", "--output", "o"],
     "training file not found: none.jsonl"),
    ("train", ["cross-encoder", "--model", "/nonexistent/model", "--data", FIXTURES / "train" / "flag-reranker.jsonl",
               "--output", "o"], "/nonexistent/model is not a model checkpoint"),
    ("train", ["cross-encoder", "--model", "default", "--data", FIXTURES / "train" / "msmarco-triples.tsv",
               "--collection", "none.tsv", "--queries", "dl19", "--output", "o"], "collection not found: none.tsv"),
    ("train", ["mine-negatives", "--run", "none.txt", "--qrels", "q", "--output", "o"], "run file not found: none.txt"),
    ("train", ["score-teacher", "--teacher", "/nonexistent/model", "--data", FIXTURES / "train" /
               "flag-reranker.jsonl", "--output", "o.jsonl"], "/nonexistent/model is not a model checkpoint"),
    ("encode", ["--model", "default", "--corpus", "none.jsonl", "--output", "o"], "none.jsonl"),
    ("index", ["--input", "none", "--index", "o"], "none"),
    ("distill", ["--collection", "none.jsonl", "--output", "o"], "none.jsonl"),
]


@pytest.mark.parametrize("module, args, message", MISSING, ids=[f"{m} {a[1]}" for m, a, _ in MISSING])
def test_a_path_that_is_not_there_is_one_line_exit_2(module, args, message, tmp_path):
    result = invoke(module, *args, cwd=tmp_path)
    assert result.exit_code == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert not any(tmp_path.iterdir())
