import pytest

from mamba_pyserini.topics import guess_reader, load_topics


@pytest.mark.parametrize("name, key, n_topics, first", [
    ("dl19", "dl19-passage", 43, ("19335", "anthropological definition of environment")),
    ("dl20", "dl20-passage", 200, None),
    ("dl20-doc", "dl20-doc", 200, None),
    ("dl19-doc", "dl19-doc", 43, None),
    ("msmarco-passage-dev-subset", "msmarco-passage-dev-subset", 6980, None),
])
def test_bundled_names_and_aliases_resolve_offline(name, key, n_topics, first):
    topics = load_topics(name)
    assert topics.name == key
    assert len(topics.queries) == n_topics
    assert topics.qrels.endswith(".txt")
    if first:
        assert next(iter(topics.queries.items())) == first


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown topics 'dl42'.*dl19-passage.*msmarco-passage-dev-subset.*dl19"):
        load_topics("dl42")


def test_tsv_topic_file(tmp_path):
    path = tmp_path / "my.tsv"
    path.write_text("q2\tsecond query\nq1\tfirst query\n")
    topics = load_topics(str(path))
    assert topics.queries == {"q1": "first query", "q2": "second query"}
    assert topics.qrels is None


def test_trec_topic_file_read_by_anserini(tmp_path):
    path = tmp_path / "topics.trec"
    path.write_text("<top>\n<num> Number: 301\n<title> International Organized Crime\n<desc> Description:\nx\n"
                    "<narr> Narrative:\ny\n</top>\n")
    assert guess_reader(path) == "Trec"
    assert load_topics(str(path)).queries == {"301": "International Organized Crime"}


def test_cacm_topics_use_anserinis_cacm_reader():
    topics = load_topics("cacm")
    assert len(topics.queries) == 64
    assert "TSS (Time Sharing System)" in topics.queries["1"]


def test_empty_query_is_refused(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("1\tfine\n2\t   \n")
    with pytest.raises(ValueError, match="empty query for topic 2"):
        load_topics(str(path))


def test_missing_qrels_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="qrels file not found"):
        load_topics("dl19", qrels=str(tmp_path / "none.txt"))
