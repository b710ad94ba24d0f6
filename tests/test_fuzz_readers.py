"""Property-based fuzzing of every reader: whatever the bytes, a reader returns or raises the project's input errors
(ValueError, FileNotFoundError), never anything else. A few seconds each, derandomized; ``-m slow`` runs the long,
random version."""
from __future__ import annotations

import gzip
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mamba_pyserini.corpus import iter_collection
from mamba_pyserini.runs import read_qrels, read_run
from mamba_pyserini.topics import READERS, load_topics
from mamba_pyserini.training.data import read_groups

# Pieces of every format the readers take, and of what breaks them.
TOKENS = [b"1", b"2", b"d1", b"Q0", b"0", b"3", b"-1", b"2.5", b"nan", b"inf", b"1e309", b"\t", b" ", b"\n", b"\r\n",
          b"\r", b"\xef\xbb\xbf", b"\xff", b"\xc3", b"\x00", b"{", b"}", b"[", b"]", b":", b",", b'"', b"null",
          b"true", b'"id"', b'"contents"', b'"qid"', b'"title"', b'"query"', b'"pos"', b'"neg"', b'"pos_scores"',
          b'"neg_scores"', b'"x"', b"<top>", b"</top>", b"<num>", b"Number:", b"<title>", b"<DOC>", b"</DOC>",
          b"<DOCNO>", b"</DOCNO>", "é".encode(), "\u2028".encode()]
LINES = [b"1 Q0 d1 1 2.0 run\n", b"1 0 d1 1\n", b"1\tflea life\n", b"d1\tfleas live a year\n",
         b'{"id": "d1", "contents": "text"}\n', b'{"qid": "1", "title": "flea"}\n',
         b'{"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1.0], "neg_scores": [0.5]}\n',
         b"q\tpositive\tnegative\n", b"<top>\n<num> Number: 301\n<title> crime\n</top>\n",
         b"<DOC>\n<DOCNO> 1 </DOCNO>\ntext\n</DOC>\n"]
content = st.lists(st.sampled_from(LINES) | st.sampled_from(TOKENS) | st.binary(max_size=4), max_size=40).map(b"".join)


@st.composite
def files(draw, gzipped: bool = False) -> bytes:
    data = draw(content)
    if gzipped and draw(st.booleans()):
        data = gzip.compress(data)
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] if draw(st.booleans()) else data[:cut] + draw(st.binary(max_size=8)) + data[cut + 8:]
    return data


READERS_UNDER_TEST = {
    "run": ("run.txt", read_run),
    "qrels": ("qrels.txt", read_qrels),
    "topics": ("topics.txt", lambda path: load_topics(str(path))),
    **{f"topics-{r}": ("topics.txt", lambda path, r=r: load_topics(str(path), reader=r)) for r in READERS},
    "collection-tsv": ("docs.tsv", lambda path: list(iter_collection(path))),
    "collection-jsonl": ("docs.jsonl", lambda path: list(iter_collection(path))),
    "collection-jsonl-gz": ("docs.jsonl.gz", lambda path: list(iter_collection(path))),
    "groups-jsonl": ("groups.jsonl", read_groups),
    "groups-jsonl-gz": ("groups.jsonl.gz", read_groups),
    "groups-triples": ("triples.tsv", read_groups),
}
LANES = [pytest.param(200, True, id="quick"),
         pytest.param(3000, False, id="long", marks=[pytest.mark.slow, pytest.mark.host])]


@pytest.mark.parametrize("examples, derandomize", LANES)
@pytest.mark.parametrize("reader", READERS_UNDER_TEST)
def test_a_reader_raises_only_input_errors(reader, examples, derandomize, tmp_path):
    name, read = READERS_UNDER_TEST[reader]
    counter = itertools.count()

    @settings(max_examples=examples, derandomize=derandomize, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(files(gzipped=name.endswith(".gz")))
    def check(data):
        path = tmp_path / str(next(counter)) / name
        path.parent.mkdir()
        path.write_bytes(data)
        try:
            read(path)
        except (ValueError, FileNotFoundError):
            pass

    check()
