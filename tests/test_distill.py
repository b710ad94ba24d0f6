"""Distillation from all-MiniLM-L6-v2 (the real teacher, from PyPI) into tiny students: initialisation, teacher
groups and the two-stage recipe through its CLI."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO
from mamba_pyserini._paths import COLLECTIONS
from mamba_pyserini.corpus import read_collection
from mamba_pyserini.modeling.auto import load_model

POOL = COLLECTIONS / "distill" / "msmarco-v2-passage.pool.jsonl.gz"
QUERIES = COLLECTIONS / "msmarco-train" / "msmarco-passage.train.sample10k-1.tsv.gz"


@pytest.fixture(scope="module")
def small_pool(tmp_path_factory):
    path = tmp_path_factory.mktemp("pool") / "pool.jsonl"
    texts = list(read_collection(POOL).items())[:120]
    path.write_text("".join(json.dumps({"id": d, "contents": t}) + "\n" for d, t in texts))
    return path


@pytest.mark.parametrize("architecture", ["mamba2", "mamba1"])
def test_a_causal_student_starts_as_the_teachers_bag_of_word_embeddings(minilm, architecture):
    from transformers import AutoModel

    from mamba_pyserini.training.distill import init_student

    backbone, tokenizer = init_student(str(minilm), architecture, layers=2)
    teacher = AutoModel.from_pretrained(minilm)
    assert torch.equal(backbone.get_input_embeddings().weight, teacher.get_input_embeddings().weight)
    assert tokenizer.eos_token == tokenizer.sep_token == "[SEP]"
    ids = torch.tensor([tokenizer("the mamba reranker")["input_ids"]])
    with torch.no_grad():
        hidden = backbone(ids, output_hidden_states=True).hidden_states
    # every residual branch outputs zero: each layer passes its input on unchanged
    assert all(torch.allclose(hidden[i], hidden[i + 1], atol=1e-5) for i in range(len(hidden) - 2))
    torch.testing.assert_close(hidden[0], teacher.get_input_embeddings()(ids))


def test_a_bert_student_is_the_teacher_and_a_bimamba2_student_keeps_its_depth(minilm):
    from transformers import AutoModel

    from mamba_pyserini.training.distill import init_student

    bert, _ = init_student(str(minilm), "bert", layers=6)
    teacher = AutoModel.from_pretrained(minilm).float()
    assert all(torch.equal(a, b) for a, b in zip(bert.state_dict().values(), teacher.state_dict().values()))
    assert all(m.p == 0 for m in bert.modules() if isinstance(m, torch.nn.Dropout))
    with pytest.raises(ValueError, match="keeps the teacher's 6 layers, not 2"):
        init_student(str(minilm), "bimamba2", layers=2)


@pytest.mark.slow
def test_one_teachers_groups_are_its_top_passages_plus_random_ones_with_its_scores(minilm, small_pool):
    from mamba_pyserini.training.teachers import ensemble_groups, to_groups

    teacher = load_model(minilm, kind="bi-encoder")
    passages = list(read_collection(small_pool).values())
    queries = list(read_collection(QUERIES).values())[:6]
    indices, scores = ensemble_groups([teacher], None, queries, passages, depth=5, n_random=4, seed=1, device="cpu")
    q, p = teacher.encode_queries(queries), teacher.encode_documents(passages)
    cosine = q @ p.T
    assert indices.shape == scores.shape == (6, 9)
    for row, s, full in zip(indices, scores, cosine):
        assert list(row[:5]) == list(np.argsort(-full)[:5])
        assert not set(row[5:]) & set(row[:5]) and len(set(row[5:])) == 4
        np.testing.assert_allclose(s, full[row], atol=1e-4)
    group = to_groups(queries, passages, indices, scores)[0]
    assert group.positives == [passages[indices[0, 0]]] and len(group.negatives) == 8
    assert group.positive_scores[0] == pytest.approx(max(cosine[0]), abs=1e-4)


@pytest.mark.slow
def test_the_recipe_trains_a_bi_encoder_then_a_cross_encoder_from_its_backbone(tmp_path, minilm, small_pool):
    out = tmp_path / "distill"
    cmd = [sys.executable, "-m", "mamba_pyserini.distill", "--teacher", str(minilm), "--collection",
           str(small_pool), "--queries", str(QUERIES), "--max-queries", "24", "--output", str(out),
           "--align-steps", "2", "--align-batch-size", "4", "--bi-steps", "4", "--cross-steps", "3",
           "--bi-queries-per-step", "4", "--cross-queries-per-step", "2", "--max-length", "64", "--depth", "6",
           "--n-random", "4", "--warmup-steps", "1", "--device", "cpu"]
    subprocess.run(cmd, check=True, cwd=REPO, capture_output=True)
    bi, cross = load_model(out / "bi-encoder"), load_model(out / "cross-encoder")
    assert (bi.KIND, cross.KIND) == ("bi-encoder", "cross-encoder")
    assert (bi.config.pooling, bi.config.normalize, cross.config.pooling) == ("mean", True, "pair")
    assert bi.backbone.config.model_type == cross.backbone.config.model_type == "bimamba2"
    assert [json.loads(x)["step"] for x in (out / "student" / "align_log.jsonl").read_text().splitlines()] == [2]
    assert all(v.dtype == torch.float16 for v in _weights(out / "bi-encoder").values())
    logs = {s: [json.loads(x) for x in (out / s / "train_log.jsonl").read_text().splitlines()]
            for s in ("bi-encoder", "cross-encoder")}
    assert [x["step"] for x in logs["bi-encoder"]][-1] == 4 and [x["step"] for x in logs["cross-encoder"]][-1] == 3
    assert json.loads((out / "recipe.json").read_text())["architecture"] == "bimamba2"
    with np.load(out / "groups.npz") as groups:
        assert groups["indices"].shape == (24, 10)
    pairs = [("what is a mamba", "a snake"), ("what is a mamba", "a state-space model")]
    assert np.isfinite(cross.predict(pairs)).all() and np.isfinite(bi.predict(pairs)).all()
    # a second run finds both stages done and leaves them alone
    before = (out / "cross-encoder" / "model.safetensors").stat().st_mtime_ns
    subprocess.run(cmd, check=True, cwd=REPO, capture_output=True)
    assert (out / "cross-encoder" / "model.safetensors").stat().st_mtime_ns == before
    # a cross-encoder is rebuilt from a bi-encoder that is there, without its student
    shutil.rmtree(out / "cross-encoder")
    shutil.rmtree(out / "student")
    subprocess.run(cmd, check=True, cwd=REPO, capture_output=True)
    assert (out / "cross-encoder" / "model.safetensors").is_file() and not (out / "student").exists()


def test_a_cross_encoder_can_start_from_a_bi_encoders_backbone(tiny_bi_encoder):
    from mamba_pyserini.modeling.cross_encoder import MambaCrossEncoder

    bi = load_model(tiny_bi_encoder)
    cross = MambaCrossEncoder.from_backbone_of(tiny_bi_encoder)
    assert cross.config.kind == "cross-encoder" and cross.config.template == "document-query"
    for (name, mine), theirs in zip(cross.backbone.state_dict().items(), bi.backbone.state_dict().values()):
        assert torch.equal(mine, theirs), name
    again = MambaCrossEncoder.from_backbone_of(tiny_bi_encoder)
    assert torch.equal(cross.head.weight, again.head.weight)  # the fresh head is seeded


def _weights(path):
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


@pytest.mark.slow
def test_a_bi_encoder_learns_to_regress_its_teachers_vectors(tmp_path, minilm, small_pool):
    from mamba_pyserini.modeling.bi_encoder import MambaBiEncoder
    from mamba_pyserini.training.data import Group
    from mamba_pyserini.training.distill import init_student
    from mamba_pyserini.training.trainer import Trainer, TrainingArguments

    teacher = load_model(minilm, kind="bi-encoder")
    passages = list(read_collection(small_pool).values())[:16]
    queries = list(read_collection(QUERIES).values())[:4]
    groups = [Group(q, passages[i:i + 1], passages[i + 1:i + 4], [0.5], [0.4, 0.3, 0.2])
              for i, q in enumerate(queries)]
    texts = queries + passages[:7]
    target = teacher.encode(texts, device="cpu")

    def trained(with_teacher: bool):
        backbone, tokenizer = init_student(str(minilm), "mamba2", layers=1)
        student = MambaBiEncoder.from_backbone(backbone, tokenizer, pooling="mean", normalize=True, max_length=64)
        args = TrainingArguments(str(tmp_path / str(with_teacher)), loss="kl", group_size=4, queries_per_step=4,
                                 max_steps=20, warmup_steps=1, learning_rate=3e-3, temperature=0.05, device="cpu",
                                 show_progress_bar=False)
        if with_teacher:
            before = float(np.mean(1 - (student.encode(texts, device="cpu") * target).sum(1)))
        Trainer(student, groups, args, teacher=teacher if with_teacher else None).train()
        after = float(np.mean(1 - (student.encode(texts, device="cpu") * target).sum(1)))
        return (before, after) if with_teacher else after

    (before, with_teacher), without = trained(True), trained(False)
    assert with_teacher < before and with_teacher < without - 0.05


def test_only_a_bi_encoder_regresses_a_teachers_vectors(tmp_path, minilm, tiny_checkpoints):
    from mamba_pyserini.training.data import Group
    from mamba_pyserini.training.trainer import Trainer, TrainingArguments

    group = Group("q", ["p"], ["n"], [1.0], [0.0])
    with pytest.raises(ValueError, match="teacher's vectors"):
        Trainer(load_model(tiny_checkpoints["mamba"]), [group], TrainingArguments(str(tmp_path), group_size=2),
                teacher=load_model(minilm, kind="bi-encoder"))


def test_an_unknown_student_architecture_is_a_one_line_error_before_any_work(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mamba_pyserini.distill", "--output", str(tmp_path / "out"),
                             "--architecture", "gru"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2  # a usage error, from the option's choices
    assert "Invalid value for '--architecture': 'gru' is not one of 'bimamba2', 'bert', 'mamba2', 'mamba1'." in \
        result.stderr
    assert not (tmp_path / "out").exists()


def test_a_bimamba2_student_of_another_depth_is_a_one_line_error_before_any_work(tmp_path, minilm):
    result = subprocess.run([sys.executable, "-m", "mamba_pyserini.distill", "--teacher", str(minilm), "--output",
                             str(tmp_path / "out"), "--layers", "2"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["Error: a bimamba2 student keeps the teacher's 6 layers, not 2"]
    assert not (tmp_path / "out").exists()


def test_a_causal_student_with_pair_pooling_is_refused_before_any_work():
    from mamba_pyserini.training.distill import Recipe

    with pytest.raises(ValueError, match="a causal mamba2 student needs --cross-pooling last or mean"):
        Recipe(architecture="mamba2")
    assert Recipe(architecture="mamba2", cross_pooling="mean").cross_pooling == "mean"
    with pytest.raises(ValueError, match="unknown cross-encoder pooling 'max'; choose one of last, cls, mean, pair"):
        Recipe(cross_pooling="max")
