"""The throughput benchmark's small CPU configuration: every workload runs and its numbers are written."""
import json

import pytest
from click.testing import CliRunner

from mamba_pyserini.bench import main, training_steps


def test_training_steps_are_real_queries_times_candidate_passages():
    steps = training_steps(2, seed=1)
    assert len(steps) == 2 and all(len(s) == 64 for s in steps)
    assert len({q for q, _ in steps[0]}) == 8 and steps == training_steps(2, seed=1)


@pytest.mark.slow
def test_small_bench_writes_json_markdown_and_chart(tmp_path):
    result = CliRunner().invoke(main, ["--out", str(tmp_path), "--steps", "1", "--models", "mamba1-130m,bert-base",
                                       "--workloads", "train,rerank,sweep", "--device", "cpu", "--repeats", "3"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["small"] and report["device"]
    got = {(r["model"], r["workload"], r["config"]) for r in report["rows"]}
    for model in ("mamba1-130m", "bert-base"):
        assert {(model, "train", "padded"), (model, "train", "rounded"), (model, "train", "bucketed"),
                (model, "rerank", "sorted"), (model, "sweep-128", "uniform")} <= got
    assert all(r["seq_per_s"] > 0 and r["tokens_per_s"] > 0 for r in report["rows"])
    for r in report["rows"]:  # the median of 3 timed passes (the sweep times one)
        assert len(r["seq_per_s_runs"]) == (1 if r["workload"].startswith("sweep") else 3)
        assert r["seq_per_s"] == sorted(r["seq_per_s_runs"])[len(r["seq_per_s_runs"]) // 2]
    table = (tmp_path / "bench.md").read_text()
    assert {("mamba1-130m", "train", "packed"), ("mamba1-130m", "rerank", "packed")} <= got  # packs on any device
    assert table.count("| mamba1-130m |") == 8 and (tmp_path / "bench.png").stat().st_size > 0
    check = report["checks"]["mamba1-130m"]
    assert check["packed_vs_padded"]["fp32_max_rel_diff"] < 1e-4 and check["loss_curves"]["steps"] == 2
    assert check["loss_curves"]["max_abs_diff"] < 1e-4


def test_unknown_model_is_bad_input(tmp_path):
    result = CliRunner().invoke(main, ["--out", str(tmp_path), "--models", "gpt-5"])
    assert result.exit_code == 2 and "unknown model 'gpt-5'" in result.output


def test_unknown_workload_is_bad_input_before_any_work(tmp_path):
    result = CliRunner().invoke(main, ["--out", str(tmp_path), "--workloads", "train,infer"])
    assert result.exit_code == 2 and "unknown workload 'infer'" in result.output and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_no_workloads_runs_only_the_packing_checks(tmp_path):
    result = CliRunner().invoke(main, ["--out", str(tmp_path), "--name", "checks", "--models",
                                       "mamba1-130m,mamba2-130m", "--workloads", ""])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "checks.json").read_text())
    assert report["rows"] == [] and set(report["checks"]) == {"mamba1-130m", "mamba2-130m"}
    for check in report["checks"].values():
        assert check["packed_vs_padded"]["fp32_max_rel_diff"] < 1e-4 and check["loss_curves"]["steps"] == 2
        assert {"bf16_padded_vs_fp32", "bf16_packed_vs_fp32"} <= set(check["packed_vs_padded"])
    assert not (tmp_path / "checks.png").exists() and "| model |" not in (tmp_path / "checks.md").read_text()


def test_summary_is_our_fastest_training_mamba_at_its_best_batching_over_each_baselines_best():
    from mamba_pyserini.bench import summary

    rows = [("mamba1-130m", "train", "padded", 400.0), ("mamba1-130m", "train", "bucketed", 500.0),
            ("mamba1-130m", "rerank", "sorted", 2000.0), ("pythia-160m", "train", "padded", 250.0),
            ("pythia-160m", "train", "rounded", 1000.0), ("pythia-160m", "rerank", "sorted", 1000.0),
            ("bert-base", "train", "padded", 500.0), ("bert-base", "rerank", "sorted", 4000.0),
            ("mamba2-130m", "train", "padded", 300.0), ("mamba2-130m", "train", "packed", 750.0),
            ("mamba2-130m", "rerank", "packed", 1000.0)]
    report = {"device": "gpu", "date": "d", "rows": [
        {"model": m, "workload": w, "config": c, "seq_per_s": v} for m, w, c, v in rows]}
    s = summary(report)
    assert s["model"] == "mamba2-130m"  # trains faster than Mamba-1 here
    assert (s["train_ratio_vs_pythia"], s["rerank_ratio_vs_pythia"]) == (0.75, 1.0)
    assert (s["train_ratio_vs_bert"], s["rerank_ratio_vs_bert"]) == (1.5, 0.25)
    assert s["train_ratio_vs_paper_stack"] == 1.875 and s["train_seq_per_s"] == 750.0  # over Mamba-1 padded
    mamba1 = s["per_model"]["mamba1-130m"]
    assert (mamba1["train_ratio_vs_pythia"], mamba1["rerank_ratio_vs_pythia"]) == (0.5, 2.0)
    assert (mamba1["train_ratio_vs_bert"], mamba1["rerank_ratio_vs_bert"]) == (1.0, 0.5)
    assert mamba1["train_ratio_vs_paper_stack"] == 1.25 and mamba1["train_seq_per_s"] == 500.0
