"""Training: the recipe overfits real MS MARCO groups, resume is exact, data errors are one-line exit-2 errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from conftest import FIXTURES, REPO, make_cross_encoder, tiny_backbone_config
from mamba_pyserini import MambaBiEncoder, MambaCrossEncoder
from mamba_pyserini.train import main as train_cli
from mamba_pyserini.training.data import Group, group_order, mine_negatives, read_groups, sample_group
from mamba_pyserini.training.losses import listwise_kl, margin_mse
from mamba_pyserini.training.trainer import Trainer, TrainingArguments

FLAG = FIXTURES / "train" / "flag-reranker.jsonl"
TRIPLES = FIXTURES / "train" / "msmarco-triples.tsv"


def _args(output, **kw):
    defaults = dict(learning_rate=3e-3, warmup_steps=2, queries_per_step=5, log_steps=1, show_progress_bar=False)
    return TrainingArguments(str(output), **{**defaults, **kw})


@pytest.mark.slow
def test_a_tiny_mamba_cross_encoder_overfits_the_training_groups(tmp_path, neox_tokenizer):
    groups = read_groups(FLAG)
    model = make_cross_encoder("mamba", neox_tokenizer, max_length=128)
    history = Trainer(model, groups, _args(tmp_path, max_steps=24)).train()
    assert history[-1]["loss"] < 0.1 * history[0]["loss"]
    for g in groups:  # the positive above all 25 of its negatives
        scores = model.predict([(g.query, d) for d in g.positives + g.negatives])
        assert scores.argmax() == 0, g.query
    saved = MambaCrossEncoder.from_pretrained(tmp_path)  # the final model, in save_pretrained form
    pairs = [(groups[0].query, d) for d in groups[0].negatives[:3]]
    assert saved.predict(pairs) == pytest.approx(model.predict(pairs), abs=1e-5)
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == list(range(1, 25)) and all(e["tokens_per_s"] > 0 for e in log)


def _cli(*args):
    return CliRunner().invoke(train_cli, [str(a) for a in args])


def _weights(path):
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


def test_resume_gives_the_same_losses_and_weights_as_an_uninterrupted_run(tmp_path, tiny_checkpoints):
    common = ["cross-encoder", "--model", tiny_checkpoints["mamba"], "--data", FLAG, "--lr", 3e-3, "--warmup-steps",
              2, "--queries-per-step", 3, "--group-size", 4, "--max-steps", 6, "--save-steps", 2, "--log-steps", 1]
    whole = _cli(*common, "--output", tmp_path / "whole")
    assert whole.exit_code == 0, whole.output
    first = _cli(*common, "--output", tmp_path / "split", "--stop-after-steps", 3)
    assert first.exit_code == 0, first.output
    assert not (tmp_path / "split" / "model.safetensors").exists()  # stopped early: only checkpoints
    again = _cli(*common, "--output", tmp_path / "split")
    assert again.exit_code == 2 and "--resume" in again.output  # never silently restarts over checkpoints
    second = _cli(*common, "--output", tmp_path / "split", "--resume")
    assert second.exit_code == 0, second.output
    logs = [[json.loads(line) for line in (tmp_path / d / "train_log.jsonl").read_text().splitlines()]
            for d in ("whole", "split")]
    assert [e["step"] for e in logs[1]] == list(range(1, 7))
    assert [e["loss"] for e in logs[1]] == pytest.approx([e["loss"] for e in logs[0]], rel=1e-5)
    assert [e["lr"] for e in logs[1]] == [e["lr"] for e in logs[0]]
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "split")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_id_triples_read_through_a_collection_and_queries_file(tmp_path, tiny_checkpoints):
    lines = [line.rstrip("\n").split("\t") for line in TRIPLES.open(encoding="utf-8")]
    texts = sorted({t for _, p, n in lines for t in (p, n)})
    pid = {t: f"p{i}" for i, t in enumerate(texts)}
    qid = {q: f"q{i}" for i, q in enumerate(dict.fromkeys(q for q, _, _ in lines))}
    (tmp_path / "collection.tsv").write_text("".join(f"{pid[t]}\t{t}\n" for t in texts))
    (tmp_path / "queries.tsv").write_text("".join(f"{i}\t{q}\n" for q, i in qid.items()))
    (tmp_path / "triples.tsv").write_text("".join(f"{qid[q]}\t{pid[p]}\t{pid[n]}\n" for q, p, n in lines))
    by_id = read_groups(tmp_path / "triples.tsv", tmp_path / "collection.tsv", tmp_path / "queries.tsv")
    assert by_id == read_groups(TRIPLES)  # the same groups as the text triples
    assert len(by_id) == len(qid) and sum(len(g.negatives) for g in by_id) >= len(by_id)
    result = _cli("cross-encoder", "--model", tiny_checkpoints["mamba2"], "--data", tmp_path / "triples.tsv",
                  "--collection", tmp_path / "collection.tsv", "--queries", tmp_path / "queries.tsv",
                  "--output", tmp_path / "out", "--max-steps", 1, "--queries-per-step", 2)
    assert result.exit_code == 0, result.output
    assert MambaCrossEncoder.from_pretrained(tmp_path / "out").config.max_length == 128


def test_queries_of_id_triples_may_be_a_topic_name(tmp_path, tiny_checkpoints):
    """Rows that mine-negatives writes from a DL19 run train with --queries dl19, no hand-written queries file."""
    from mamba_pyserini.topics import load_topics

    queries = load_topics("dl19").queries
    first, second = list(queries)[:2]
    (tmp_path / "collection.tsv").write_text("p1\tfleas live a year\np2\tanthropology\np3\tnothing\n")
    (tmp_path / "rows.tsv").write_text(f"{first}\tp1\tp3\n{second}\tp2\tp3\n")
    groups = read_groups(tmp_path / "rows.tsv", tmp_path / "collection.tsv", queries)
    assert [g.query for g in groups] == [queries[first], queries[second]]
    result = _cli("cross-encoder", "--model", tiny_checkpoints["mamba"], "--data", tmp_path / "rows.tsv",
                  "--collection", tmp_path / "collection.tsv", "--queries", "dl19", "--output", tmp_path / "out",
                  "--max-steps", 1, "--queries-per-step", 2, "--group-size", 2)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("content, extra, message", [
    ("", (), "has no training groups"),
    ("q1\tp1\tp404\n", ("collection", "queries"), "passage id 'p404' is not in"),
    ('{"query": "q", "pos": ["a"], "neg": []}\n', (), "has no negatives"),
    ("only one field\n", (), "malformed triple"),
    ('{"query": "q", "pos": ["a"], "neg": ["b"], "pos_scores": [1.0]}\n', (), "teacher scores"),
])
def test_bad_training_data_is_a_one_line_error_and_writes_nothing(tmp_path, tiny_checkpoints, content, extra,
                                                                   message):
    data = tmp_path / ("data.jsonl" if content.startswith("{") else "data.tsv")
    data.write_text(content)
    (tmp_path / "collection.tsv").write_text("p1\tsome passage\n")
    (tmp_path / "queries.tsv").write_text("q1\tsome query\n")
    options = [x for name in extra for x in (f"--{name}", tmp_path / f"{name}.tsv")]
    result = _cli("cross-encoder", "--model", tiny_checkpoints["mamba"], "--data", data, *options,
                  "--output", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_of_the_wrong_kind_is_refused(tmp_path, tiny_checkpoints):
    result = _cli("bi-encoder", "--model", tiny_checkpoints["mamba"], "--data", FLAG, "--output", tmp_path / "out")
    assert result.exit_code == 2 and "is a cross-encoder checkpoint, not a bi-encoder" in result.output


def test_sampling_and_order_depend_only_on_the_seed_and_position():
    group = Group("q", ["p"], [f"n{i}" for i in range(5)])
    import random

    texts, _ = sample_group(group, 4, random.Random("7:3"))
    assert texts[0] == "p" and len(set(texts[1:])) == 3 and texts == sample_group(group, 4, random.Random("7:3"))[0]
    assert sample_group(group, 9, random.Random(0))[0][1:] != []  # too few negatives: drawn with replacement
    order = group_order(10, seed=1, start=0, count=30)
    assert sorted(order[:10]) == sorted(order[10:20]) == list(range(10)) and order[:10] != order[10:20]
    assert group_order(10, 1, 13, 9) == order[13:22]


def test_distillation_losses_vanish_when_the_student_matches_the_teacher():
    teacher = torch.tensor([[3.0, 1.0, -2.0], [0.5, 0.4, 0.1]])
    assert margin_mse(teacher + 5.0, teacher) == pytest.approx(0.0, abs=1e-7)  # margins, not values
    assert listwise_kl(teacher, teacher) == pytest.approx(0.0, abs=1e-7)
    assert margin_mse(teacher.flip(1), teacher) > 0 and listwise_kl(teacher.flip(1), teacher) > 0


@pytest.mark.parametrize("loss", ["margin-mse", "kl"])
def test_cross_encoder_distils_the_teacher_scores_of_the_data(tmp_path, neox_tokenizer, loss):
    from mamba_pyserini.training.losses import ranking_loss

    groups = read_groups(FLAG)

    def full_loss():  # the objective over every group's full candidate list
        values = []
        for g in groups:
            student = torch.tensor(model.predict([(g.query, d) for d in g.positives + g.negatives]))[None]
            values.append(ranking_loss(loss, student, torch.tensor([g.positive_scores + g.negative_scores])))
        return float(sum(values)) / len(values)

    model = make_cross_encoder("mamba2", neox_tokenizer, max_length=96)
    before = full_loss()
    Trainer(model, groups, _args(tmp_path, loss=loss, max_steps=20)).train()
    assert full_loss() < 0.7 * before


def test_a_distillation_loss_without_teacher_scores_is_refused(tmp_path, neox_tokenizer):
    model = make_cross_encoder("mamba", neox_tokenizer, max_length=96)
    with pytest.raises(ValueError, match="needs teacher scores"):
        Trainer(model, read_groups(TRIPLES), _args(tmp_path, loss="kl"))


def test_lora_trains_adapters_and_saves_a_merged_model(tmp_path, neox_tokenizer):
    model = make_cross_encoder("mamba", neox_tokenizer, max_length=96)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = _args(tmp_path, lora=True, lora_r=4, lora_alpha=8, max_steps=3)
    Trainer(model, read_groups(FLAG), args).train()
    assert not any("lora" in k for k in model.state_dict())  # merged back
    changed = {k for k in before if not torch.equal(before[k], model.state_dict()[k])}
    assert "head.weight" in changed and any("in_proj" in k for k in changed)
    assert not any("conv1d" in k or "norm" in k for k in changed)  # frozen: not a LoRA target
    saved = MambaCrossEncoder.from_pretrained(tmp_path)
    torch.testing.assert_close(saved.state_dict()["head.weight"], model.state_dict()["head.weight"])


def test_bi_encoder_contrastive_training_lowers_the_loss(tmp_path, neox_tokenizer):
    torch.manual_seed(0)
    model = MambaBiEncoder.from_backbone_config(tiny_backbone_config("mamba", len(neox_tokenizer)), neox_tokenizer,
                                                max_length=96, normalize=True)
    history = Trainer(model, read_groups(FLAG), _args(tmp_path, max_steps=12, temperature=0.05)).train()
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert MambaBiEncoder.from_pretrained(tmp_path).config.normalize


def test_mine_negatives_samples_below_the_best_positive_reproducibly(tmp_path):
    from mamba_pyserini.runs import Hit

    run = {"1": [Hit(f"d{i}", 10.0 - i) for i in range(10)], "2": [Hit("x", 1.0)], "3": [Hit("a", 2.0), Hit("b", 1.0)]}
    qrels = {"1": {"d3": 1, "d6": 2, "d8": 0}, "2": {"x": 1}, "3": {"zz": 1}}
    rows = mine_negatives(run, qrels, n=4, seed=1)
    assert [r[:2] for r in rows] == [["1", "d3"], ["1", "d6"], ["3", "zz"]]  # query 2: no negative below
    negatives = rows[0][2:]
    assert len(negatives) == 4 and set(negatives) <= {"d4", "d5", "d7", "d8", "d9"} and rows[1][2:] == negatives
    assert rows == mine_negatives(run, qrels, n=4, seed=1) and sorted(rows[2][2:]) == ["a", "b"]
    (tmp_path / "run.txt").write_text("".join(f"1 Q0 d{i} {i + 1} {10 - i} bm25\n" for i in range(10)))
    (tmp_path / "qrels.txt").write_text("1 0 d3 1\n")
    result = _cli("mine-negatives", "--run", tmp_path / "run.txt", "--qrels", tmp_path / "qrels.txt",
                  "--output", tmp_path / "groups.tsv", "--negatives", 3)
    assert result.exit_code == 0, result.output
    row = (tmp_path / "groups.tsv").read_text().split()
    assert row[:2] == ["1", "d3"] and len(row) == 5 and all(int(d[1:]) > 3 for d in row[2:])


def test_score_teacher_writes_the_teachers_scores(tmp_path, neox_tokenizer):
    torch.manual_seed(0)
    teacher = MambaBiEncoder.from_backbone_config(tiny_backbone_config("mamba2", len(neox_tokenizer)),
                                                  neox_tokenizer, max_length=64, normalize=True)
    teacher.save_pretrained(tmp_path / "teacher")
    result = _cli("score-teacher", "--teacher", tmp_path / "teacher", "--data", TRIPLES, "--output",
                  tmp_path / "scored.jsonl")
    assert result.exit_code == 0, result.output
    scored = read_groups(tmp_path / "scored.jsonl")
    g = scored[0]
    expected = teacher.predict([(g.query, d) for d in g.positives + g.negatives])
    assert g.positive_scores + g.negative_scores == pytest.approx(expected.tolist(), abs=1e-5)


@pytest.mark.slow
def test_torchrun_on_two_cpu_processes_matches_one_process_with_the_same_global_batch(tmp_path, tiny_checkpoints):
    common = ["-m", "mamba_pyserini.train", "cross-encoder", "--model", str(tiny_checkpoints["mamba"]), "--data",
              str(FLAG), "--lr", "3e-3", "--warmup-steps", "1", "--group-size", "4", "--max-steps", "3",
              "--log-steps", "1", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, *common, "--queries-per-step", "4", "--output", str(tmp_path / "one")],
                   check=True, env=env, cwd=REPO)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *common,
                    "--queries-per-step", "2", "--output", str(tmp_path / "two")], check=True, env=env, cwd=REPO)
    logs = [[json.loads(x)["loss"] for x in (tmp_path / d / "train_log.jsonl").read_text().splitlines()]
            for d in ("one", "two")]
    assert logs[1] == pytest.approx(logs[0], rel=1e-4)
