"""Regressions in Pyserini's 2CR style: every offline condition reproduces (the full run is in the slow lane)."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from mamba_pyserini import regression
from mamba_pyserini.regression import load_conditions, main, verdict


def test_verdicts_follow_pyserini():
    assert verdict(0.5058, 0.50581) == "OK"
    assert verdict(0.3643, 0.3648) == "OKish"  # within 0.0005
    assert verdict(0.3643, 0.3700) == "OKish"  # higher than expected
    assert verdict(0.3643, 0.3630) == "FAIL"
    assert verdict(None, 0.1234) == "RECORDED"


def test_list_and_dry_run_run_nothing(tmp_path):
    result = CliRunner().invoke(main, ["--list"])
    assert result.exit_code == 0 and "cacm-bm25 " in result.output and "bm25-rm3-default" in result.output
    result = CliRunner().invoke(main, ["--condition", "cacm-bm25", "--dry-run", "--directory", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "mamba_pyserini.index --input collections/cacm/cacm.tar.gz" in result.output
    assert f"--output {tmp_path}/run.cacm-bm25.cacm.txt" in result.output
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_condition_is_bad_input():
    result = CliRunner().invoke(main, ["--condition", "bm42"])
    assert result.exit_code == 2 and "unknown condition 'bm42'" in result.output


def test_a_wrong_expectation_fails_with_a_nonzero_exit(tmp_path, monkeypatch):
    (tmp_path / "wrong.yaml").write_text(
        "conditions:\n  - name: wrong\n    display: BM25 with a wrong expectation\n    topics:\n"
        "      - topics: dl19-passage\n"
        "        command: python -m mamba_pyserini.search --topics dl19 --reranker none --output {run}\n"
        "        scores: {nDCG@10: 0.6000, MRR@10: null}\n")
    monkeypatch.setattr(regression, "REGRESSIONS", tmp_path)
    result = CliRunner().invoke(main, ["--all", "--directory", str(tmp_path / "out")])
    assert result.exit_code == 1 and "1 of 2 scores FAIL" in result.output
    report = (tmp_path / "out" / "regression-report.md").read_text()
    assert "| wrong | dl19-passage | nDCG@10 | 0.6000 | 0.5058 | FAIL |" in report
    assert "| wrong | dl19-passage | MRR@10 | — | 0.8233 | RECORDED |" in report


# Conditions that vary only the reranker over a first stage another condition checks: their scores depend on torch,
# transformers and the model, which both lanes pin alike, not on the host, so the host lane leaves them to the full one.
RERANKER_VARIANTS = {"bm25-default.all-minilm-l6-v2", "bm25-rm3-default.bimamba2-l6-bi-encoder.w0.8",
                     "bm25-default.bimamba2-l6-bi-encoder", "bm25-default.bimamba2-l6-cross-encoder.w0.8",
                     "bm25-default.bimamba2-l6-cross-encoder"}


def _all_ok(names: list[str], directory) -> None:
    """``python -m mamba_pyserini.regression --condition ...``: every score of these conditions is OK or OKish."""
    conditions = load_conditions()
    result = CliRunner().invoke(main, [a for n in names for a in ("--condition", n)] + ["--directory", str(directory)])
    assert result.exit_code == 0, result.output
    report = (directory / "regression-report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| ") and not line.startswith("| condition")]
    assert len(rows) == sum(len(t.scores) for n in names for t in conditions[n].runs)
    assert all(line.rstrip(" |").endswith(("OK", "OKish")) for line in rows), report


@pytest.mark.slow
@pytest.mark.host
def test_every_offline_condition_where_the_host_matters_is_ok(tmp_path):
    """CACM (Anserini's regression), dense retrieval and Pyserini's own CLI run reranked in FirstP and MaxP modes,
    the bundled DL first stages and the main job (``search --topics dl19`` / ``dl20``)."""
    offline = [n for n, c in load_conditions().items() if c.offline]
    assert RERANKER_VARIANTS < set(offline)
    _all_ok([n for n in offline if n not in RERANKER_VARIANTS], tmp_path)


@pytest.mark.slow
def test_every_reranker_variant_is_ok(tmp_path):
    """The other rerankers and weights over the bundled DL first stages (the full lane only)."""
    _all_ok(sorted(RERANKER_VARIANTS), tmp_path)


def test_prepare_lays_out_msmarco_from_a_mirror(tmp_path):
    """The download-and-layout path of the GPU conditions, against a local file:// mirror."""
    import gzip
    import io
    import tarfile

    from mamba_pyserini.prepare import prepare

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    files = {"collection.tsv": "0\tpassage zero\n1\tpassage one\n2\tpassage two\n",
             "queries.train.tsv": "10\tquery ten\n11\tquery eleven\n12\tunjudged\n",
             "qrels.train.tsv": "10\t0\t1\t1\n11\t0\t2\t1\n"}
    with tarfile.open(mirror / "collectionandqueries.tar.gz", "w:gz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(f"collectionandqueries/{name}")
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    out = prepare("msmarco-passage", tmp_path / "data", train_queries=1, seed=3, url_base=mirror.as_uri())
    for name, text in files.items():
        assert (out / name).read_text() == text
    sample = (out / "queries.train.sample.tsv").read_text().splitlines()
    assert len(sample) == 1 and sample[0].split("\t")[0] in {"10", "11"}  # judged queries only
    docs = [("D1", "http://a", "Title A", "Body A"), ("D2", "http://b", "", "Body B")]
    with gzip.open(mirror / "msmarco-docs.tsv.gz", "wt") as f:
        f.writelines("\t".join(d) + "\n" for d in docs)
    with gzip.open(mirror / "msmarco-doctrain-queries.tsv.gz", "wt") as f:
        f.write("5\tdoc query\n")
    with gzip.open(mirror / "msmarco-doctrain-qrels.tsv.gz", "wt") as f:
        f.write("5 0 D2 1\n")
    out = prepare("msmarco-doc", tmp_path / "doc", url_base=mirror.as_uri())
    assert (out / "collection.tsv").read_text() == "D1\thttp://a Title A Body A\nD2\thttp://b Body B\n"
    assert (out / "queries.train.sample.tsv").read_text() == "5\tdoc query\n"
