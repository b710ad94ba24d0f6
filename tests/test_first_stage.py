"""Every first stage answers the one protocol (``first_stage.Searcher``): the top k hits of the queries asked, a
condition naming the run, and texts where it has them."""
from __future__ import annotations

from conftest import FIXTURES
from mamba_pyserini.first_stage import BundledCandidates, Fused, RunFile
from mamba_pyserini.runs import read_run, sort_hits
from mamba_pyserini.topics import load_topics

QUERIES = dict(list(load_topics("dl19").queries.items())[:3])


def test_the_bundled_candidates_give_the_top_k_of_the_queries_asked_with_their_texts():
    searcher = BundledCandidates("dl19-passage", "bm25-rm3")
    run = searcher.search(QUERIES, k=5)
    assert searcher.condition == "bm25-rm3-default" and set(run) == set(QUERIES)
    assert all(len(hits) == 5 and hits == sort_hits(hits) and hits == searcher.run[q][:5] for q, hits in run.items())
    assert all(searcher.texts[h.docid] for hits in run.values() for h in hits)


def test_a_run_file_is_reranked_as_it_stands_under_its_tag():
    path = FIXTURES / "pyserini.bm25.dl19-passage.txt"
    searcher = RunFile(str(path))
    assert searcher.condition == "rank" and searcher.texts is None  # the fixture's tag
    assert searcher.search(QUERIES, k=5) == read_run(path)


def test_a_fusion_names_and_fuses_both_first_stages():
    sparse, other = BundledCandidates("dl19-passage"), BundledCandidates("dl19-passage", "bm25-rm3")
    fused = Fused(sparse, other, "rrf")
    run = fused.search(QUERIES, k=10)
    assert fused.condition == "bm25-default+bm25-rm3-default.rrf" and set(run) == set(QUERIES)
    for qid, hits in run.items():
        assert len(hits) == 10 and hits == sort_hits(hits)
        both = {h.docid for h in sparse.run[qid]} & {h.docid for h in other.run[qid]}
        assert hits[0].docid in both  # a passage both rank high outranks one only either ranks
