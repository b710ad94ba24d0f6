"""Distilling a sentence-transformers teacher into small students with no labels: a student that starts from the
teacher's embedding layer, training groups that the teacher ranks and scores over an unlabelled passage pool, and the
two-stage recipe behind ``python -m mamba_pyserini.distill`` (a bi-encoder first, then a cross-encoder that starts
from the bi-encoder's backbone)."""
from __future__ import annotations

import dataclasses
import json
import logging
import random
from pathlib import Path

import numpy as np
import torch

from .._io import atomic_write
from .data import Group

log = logging.getLogger("mamba_pyserini")
ARCHITECTURES = ("mamba2", "mamba1", "bert")
GROUPS_FILE = "groups.npz"
RESIDUAL_OUTPUTS = ("mixer.out_proj", "output.dense")  # Mamba mixers; BERT attention and MLP outputs


def student_config(architecture: str, teacher_config, layers: int):
    """A transformers config of the teacher's width and vocabulary: Mamba-2 (64-dim heads, state 64, chunks of 32,
    which keeps its PyTorch path fast on CPUs), Mamba-1 (state 16) or a BERT encoder shaped like the teacher."""
    from transformers import BertConfig, Mamba2Config, MambaConfig

    width, vocab = teacher_config.hidden_size, teacher_config.vocab_size
    if architecture == "mamba2":
        return Mamba2Config(vocab_size=vocab, hidden_size=width, num_hidden_layers=layers, state_size=64, expand=2,
                            head_dim=64, num_heads=2 * width // 64, n_groups=1, chunk_size=32)
    if architecture == "mamba1":
        return MambaConfig(vocab_size=vocab, hidden_size=width, num_hidden_layers=layers, state_size=16, expand=2)
    if architecture == "bert":
        return BertConfig(vocab_size=vocab, hidden_size=width, num_hidden_layers=layers,
                          num_attention_heads=teacher_config.num_attention_heads,
                          intermediate_size=teacher_config.intermediate_size,
                          max_position_embeddings=teacher_config.max_position_embeddings)
    raise ValueError(f"unknown student architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")


def init_student(teacher: str, architecture: str, layers: int, seed: int = 42):
    """(backbone, tokenizer): a random ``architecture`` backbone whose embedding layer is copied from the teacher
    (word embeddings; positions and layer norm too where the student has them) and whose residual branches output
    zero, so that it starts as the teacher's bag of word embeddings; with the teacher's tokenizer, whose separator
    doubles as the EOS token that causal students end their inputs with."""
    from transformers import AutoTokenizer

    from ..modeling.backbone import build_backbone, load_backbone, resolve_checkpoint

    teacher = resolve_checkpoint(teacher)
    source = load_backbone(teacher)
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    if tokenizer.eos_token is None:
        tokenizer.eos_token = tokenizer.sep_token
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = build_backbone(student_config(architecture, source.config, layers))
    mine, theirs = dict(backbone.named_parameters()), dict(source.named_parameters())
    copied = [name for name in mine if name.startswith("embeddings.") and name in theirs]
    with torch.no_grad():
        backbone.get_input_embeddings().weight.copy_(source.get_input_embeddings().weight)
        for name in copied:
            mine[name].copy_(theirs[name])
        for name, module in backbone.named_modules():  # residual branches start at zero: a bag of embeddings
            if name.endswith(RESIDUAL_OUTPUTS):
                module.weight.zero_()
    log.info("student %s x %d layers: copied the teacher's %s", architecture, layers,
             ", ".join(["word embeddings", *copied]))
    return backbone, tokenizer


def teacher_groups(teacher, queries: list[str], passages: list[str], depth: int = 20, n_random: int = 10,
                   seed: int = 42, batch_size: int = 256, device: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For every query, the teacher's top ``depth`` passages of the pool (its best first) and ``n_random`` random
    others: (Q, depth + n_random) passage indices and the teacher's scores of them."""
    from ..modeling.base import resolve_device

    if depth < 2 or len(passages) < depth + n_random:
        raise ValueError(f"need depth >= 2 and a pool of at least depth + random = {depth + n_random} passages")
    kwargs = {"batch_size": batch_size, "device": device, "show_progress_bar": True}
    q = torch.from_numpy(teacher.encode_queries(queries, **kwargs))
    p = torch.from_numpy(teacher.encode_documents(passages, **kwargs))
    dev = resolve_device(device)
    p = p.to(dev)
    rng = np.random.default_rng(seed)
    indices = np.empty((len(queries), depth + n_random), dtype=np.int64)
    for start in range(0, len(queries), 4096):
        scores = q[start:start + 4096].to(dev) @ p.T
        indices[start:start + len(scores), :depth] = scores.topk(depth, dim=1).indices.cpu().numpy()
    for row in indices:  # random passages outside the row's top ``depth``
        taken = set(row[:depth].tolist())
        picks = [i for i in rng.choice(len(passages), n_random + depth, replace=False).tolist() if i not in taken]
        row[depth:] = picks[:n_random]
    scores = np.einsum("qd,qkd->qk", q.numpy(), p.cpu().numpy()[indices])
    return indices, scores.astype(np.float32)


def to_groups(queries: list[str], passages: list[str], indices: np.ndarray, scores: np.ndarray) -> list[Group]:
    """Groups whose 'positive' is the teacher's best passage and whose negatives are the rest, with its scores (the
    distillation losses only use the scores; MarginMSE takes margins from the best one)."""
    return [Group(query, [passages[row[0]]], [passages[i] for i in row[1:]], [float(s[0])], s[1:].tolist())
            for query, row, s in zip(queries, indices, scores)]


@dataclasses.dataclass
class Recipe:
    """The settings of one distillation run (saved beside its outputs as ``recipe.json``)."""

    architecture: str = "mamba2"
    layers: int = 6
    depth: int = 20
    n_random: int = 10
    bi_steps: int = 4000
    cross_steps: int = 4000
    bi_queries_per_step: int = 32
    cross_queries_per_step: int = 16
    group_size: int = 8
    bi_learning_rate: float = 2e-4
    cross_learning_rate: float = 3e-4
    warmup_steps: int = 300
    temperature: float = 0.05
    embedding_weight: float = 1.0  # the bi-encoder also regresses the teacher's vectors (cosine distance)
    max_length: int = 256
    seed: int = 42

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown student architecture {self.architecture!r}; choose one of "
                             f"{', '.join(ARCHITECTURES)}")


def build_groups(output: Path, teacher: str, queries: list[str], passages: list[str], recipe: Recipe,
                 device: str | None) -> list[Group]:
    """The teacher's groups, computed once and kept in ``output/groups.npz``."""
    from ..modeling.base import load_model

    path = output / GROUPS_FILE
    if path.is_file():
        data = np.load(path)
        if data["indices"].shape != (len(queries), recipe.depth + recipe.n_random):
            raise ValueError(f"{path} was built for other data or settings: remove it to rebuild")
        return to_groups(queries, passages, data["indices"], data["scores"])
    model = load_model(teacher, kind="bi-encoder")
    indices, scores = teacher_groups(model, queries, passages, recipe.depth, recipe.n_random, recipe.seed,
                                     device=device)
    output.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        np.savez(f, indices=indices, scores=scores)
    return to_groups(queries, passages, indices, scores)


def distill(teacher: str, queries: list[str], passages: list[str], output: str | Path, recipe: Recipe,
            device: str | None = None, resume: bool = False) -> dict[str, Path]:
    """Run the recipe into ``output``: ``bi-encoder/`` (teacher's word embeddings, listwise KL over the teacher's
    groups plus the cosine distance to the teacher's vectors of the same texts, mean pooling, cosine) then
    ``cross-encoder/`` (the bi-encoder's backbone, a fresh head, the same loss).
    A stage whose model is already there is skipped; ``resume`` continues a stage from its latest checkpoint."""
    from ..modeling.base import SAFETENSORS, load_model
    from ..modeling.bi_encoder import MambaBiEncoder
    from ..modeling.cross_encoder import MambaCrossEncoder
    from .trainer import Trainer, TrainingArguments

    output = Path(output)
    groups = build_groups(output, teacher, queries, passages, recipe, device)
    random.Random(recipe.seed).shuffle(groups)
    with atomic_write(output / "recipe.json") as f:
        json.dump({"teacher": teacher, **dataclasses.asdict(recipe)}, f, indent=2)
    stages = {"bi-encoder": output / "bi-encoder", "cross-encoder": output / "cross-encoder"}
    common = {"group_size": recipe.group_size, "warmup_steps": recipe.warmup_steps, "temperature": recipe.temperature,
              "loss": "kl", "seed": recipe.seed, "device": device, "save_steps": 500, "log_steps": 50}
    if not (stages["bi-encoder"] / SAFETENSORS).is_file():
        backbone, tokenizer = init_student(teacher, recipe.architecture, recipe.layers, recipe.seed)
        model = MambaBiEncoder.from_backbone(backbone, tokenizer, pooling="mean", normalize=True,
                                             max_length=recipe.max_length)
        args = TrainingArguments(str(stages["bi-encoder"]), queries_per_step=recipe.bi_queries_per_step,
                                 learning_rate=recipe.bi_learning_rate, max_steps=recipe.bi_steps,
                                 embedding_weight=recipe.embedding_weight, **common)
        teacher_model = load_model(teacher, kind="bi-encoder") if recipe.embedding_weight > 0 else None
        Trainer(model, groups, args, teacher=teacher_model).train(resume=resume)
        model.save_pretrained(stages["bi-encoder"], dtype=torch.float16)  # what ships; checkpoints keep fp32
    if not (stages["cross-encoder"] / SAFETENSORS).is_file():
        model = MambaCrossEncoder.from_backbone_of(stages["bi-encoder"], max_length=recipe.max_length)
        args = TrainingArguments(str(stages["cross-encoder"]), queries_per_step=recipe.cross_queries_per_step,
                                 learning_rate=recipe.cross_learning_rate, max_steps=recipe.cross_steps, **common)
        Trainer(model, groups, args).train(resume=resume)
        model.save_pretrained(stages["cross-encoder"], dtype=torch.float16)
    return stages

