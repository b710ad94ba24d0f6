import math

import pytest

from mamba_pyserini.runs import Hit, read_run, sort_hits, write_run


def test_sort_hits_breaks_ties_by_docid_at_written_precision():
    hits = [Hit("d3", 1.0), Hit("d1", 1.0000001), Hit("d2", 2.0), Hit("d0", 0.5)]
    # 1.0 and 1.0000001 are equal at 6 decimals, so docid decides, as in the written file.
    assert [h.docid for h in sort_hits(hits)] == ["d2", "d1", "d3", "d0"]


def test_write_then_read_round_trip(tmp_path):
    run = {"q1": [Hit("b", 0.5), Hit("a", 0.5), Hit("c", 3.25)], "q2": [Hit("x", -1.0)]}
    path = tmp_path / "run.txt"
    write_run(run, path, "tag")
    lines = path.read_text().splitlines()
    assert lines[0] == "q1 Q0 c 1 3.250000 tag"
    assert lines[1] == "q1 Q0 a 2 0.500000 tag"
    assert lines[2] == "q1 Q0 b 3 0.500000 tag"
    assert read_run(path) == {"q1": [Hit("c", 3.25), Hit("a", 0.5), Hit("b", 0.5)], "q2": [Hit("x", -1.0)]}


def test_msmarco_format(tmp_path):
    path = tmp_path / "run.tsv"
    write_run({"7": [Hit("a", 1.0), Hit("b", 2.0)]}, path, "t", "msmarco")
    assert path.read_text() == "7\tb\t1\n7\ta\t2\n"


@pytest.mark.parametrize("line, problem", [
    ("q1 Q0 d1 1 0.5", "malformed run line"),
    ("q1 Q0 d1 first 0.5 tag", "rank must be an integer"),
    ("q1 Q0 d1 1 high tag", "rank must be an integer and score a number"),
    ("q1 Q0 d1 1 nan tag", "not a finite number"),
])
def test_read_run_rejects_malformed_lines_with_their_line_number(tmp_path, line, problem):
    path = tmp_path / "bad.txt"
    path.write_text("q0 Q0 d0 1 1.0 tag\n" + line + "\n")
    with pytest.raises(ValueError, match=f"bad.txt:2: .*{problem}"):
        read_run(path)


def test_read_run_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="run file not found"):
        read_run(tmp_path / "nope.txt")


def test_nan_scores_are_refused_and_nothing_is_written(tmp_path):
    path = tmp_path / "run.txt"
    with pytest.raises(ValueError, match="not a finite number"):
        write_run({"q": [Hit("a", 1.0), Hit("b", math.nan)]}, path, "t")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "run.txt"
    write_run({"q": [Hit("a", 1.0)]}, path, "old")
    with pytest.raises(ValueError):
        write_run({"q": [Hit("a", 1.0)]}, path, "bad tag")
    assert path.read_text() == "q Q0 a 1 1.000000 old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["run.txt"]


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    from mamba_pyserini._io import atomic_write

    with pytest.raises(RuntimeError):
        with atomic_write(tmp_path / "out.txt") as f:
            f.write("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
