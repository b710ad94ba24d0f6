"""Distilling a sentence-transformers teacher into small students with no labels: a student that starts from the
teacher (converted into BiMamba-2, or only its embeddings for causal Mambas), training groups that the teacher ranks
and scores over an unlabelled passage pool, and the recipe behind ``python -m mamba_pyserini.distill`` (align the
student's mixers with the teacher's attention, train a bi-encoder, then a cross-encoder from its backbone)."""
from __future__ import annotations

import dataclasses
import json
import logging
import random
from pathlib import Path

import numpy as np
import torch

from .._cli import setting
from .._io import atomic_write
from ..pooling import POOLINGS
from .data import Group

log = logging.getLogger("mamba_pyserini")
ARCHITECTURES = ("bimamba2", "bert", "mamba2", "mamba1")
TEACHER_SHAPED = ("bimamba2", "bert")  # students that keep the teacher's layers (and so can match its hidden states)
GROUPS_FILE = "groups.npz"
RESIDUAL_OUTPUTS = ("mixer.out_proj",)  # Mamba mixers


def student_config(architecture: str, teacher_config, layers: int):
    """The transformers config of a causal student of the teacher's width and vocabulary: Mamba-2 (64-dim heads, state
    64, chunks of 32, which keeps its PyTorch path fast on CPUs) or Mamba-1 (state 16)."""
    from transformers import Mamba2Config, MambaConfig

    width, vocab = teacher_config.hidden_size, teacher_config.vocab_size
    if architecture == "mamba2":
        return Mamba2Config(vocab_size=vocab, hidden_size=width, num_hidden_layers=layers, state_size=64, expand=2,
                            head_dim=64, num_heads=2 * width // 64, n_groups=1, chunk_size=32)
    if architecture == "mamba1":
        return MambaConfig(vocab_size=vocab, hidden_size=width, num_hidden_layers=layers, state_size=16, expand=2)
    raise ValueError(f"unknown causal student architecture {architecture!r}")


def check_depth(architecture: str, layers: int, teacher_layers: int) -> None:
    """Students shaped like the teacher keep its depth."""
    if architecture in TEACHER_SHAPED and layers != teacher_layers:
        raise ValueError(f"a {architecture} student keeps the teacher's {teacher_layers} layers, not {layers}")


def check_recipe(teacher: str, recipe: "Recipe") -> None:
    """What can be checked against the teacher before any work: its depth, for students shaped like it."""
    from ..modeling.backbone import load_backbone_config, resolve_checkpoint

    check_depth(recipe.architecture, recipe.layers, load_backbone_config(resolve_checkpoint(teacher)).num_hidden_layers)


def init_student(teacher: str, architecture: str, layers: int, seed: int = 42):
    """(backbone, tokenizer) of a student that starts from a BERT-shaped teacher, with the teacher's tokenizer:

    - ``bimamba2``: the teacher converted into BiMamba-2 (``modeling/bimamba.py``: its attention layers become
      bidirectional Mamba-2 mixers initialised from them; everything else copied);
    - ``bert``: the teacher itself (the transformer control of the same recipe);
    - ``mamba2``/``mamba1``: a causal Mamba of ``layers`` layers with the teacher's word embeddings (positions and
      layer norm where it has them) and residual branches that output zero, so it starts as the teacher's bag of
      embeddings; its inputs end with the separator as EOS.
    The first two keep the teacher's depth."""
    from transformers import AutoTokenizer

    from ..modeling.backbone import build_backbone, load_backbone, resolve_checkpoint
    from ..modeling.bimamba import from_bert

    teacher = resolve_checkpoint(teacher)
    source = load_backbone(teacher).float()
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    check_depth(architecture, layers, source.config.num_hidden_layers)
    if architecture in TEACHER_SHAPED:
        backbone = from_bert(source) if architecture == "bimamba2" else source
        for module in backbone.modules():  # students of the teacher's shape match it exactly: no dropout
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if hasattr(backbone.config, key):
                setattr(backbone.config, key, 0.0)
        return backbone, tokenizer
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


def align_mixers(backbone, teacher, texts: list[str], steps: int, batch_size: int, learning_rate: float,
                 seed: int = 42, device: str | None = None) -> list[dict]:
    """MOHAWK's hidden-state alignment for a BiMamba-2 student converted from ``teacher`` (a bi-encoder over the same
    BERT): every layer is fed the teacher's input to the layer it replaces and its mixer learns to give that layer's
    output (mean squared error over real tokens), all layers at once. Returns the loss log (every 50 steps)."""
    from transformers import get_linear_schedule_with_warmup

    from .._kernels import kernels_for
    from ..modeling.base import resolve_device

    device = resolve_device(device)
    on_gpu = device.startswith("cuda")
    backbone.to(device).train()
    teacher.to(device).eval().requires_grad_(False)
    params = [p for layer in backbone.layers for p in layer.mixer.parameters()]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0, fused=on_gpu or None)
    scheduler = get_linear_schedule_with_warmup(optimizer, min(100, steps // 10), steps)
    rng, history = random.Random(seed), []
    with kernels_for(device):
        for step in range(1, steps + 1):
            features = teacher.tokenize([texts[rng.randrange(len(texts))] for _ in range(batch_size)], False)
            batch = teacher.batch(features, device, pack=False)  # every layer's states need padded batches
            mask = batch["attention_mask"]
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu):
                with torch.no_grad():
                    states = [h.float() for h in teacher(**batch, all_layers=True)[1]]
                real = mask.bool()
                loss = torch.stack([(layer(states[i], mask).float()[real] - states[i + 1][real]).pow(2).mean()
                                    for i, layer in enumerate(backbone.layers)]).mean()
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if step % 50 == 0 or step == steps:
                history.append({"step": step, "loss": loss.item()})
                log.info("align step %d: %.4f", step, loss.item())
    return history


@dataclasses.dataclass
class Recipe:
    """The settings of one distillation run (saved beside its outputs as ``recipe.json``); the defaults built the
    bundled models on one H100."""

    architecture: str = setting("bimamba2", "Student: bimamba2 (the teacher converted), bert (the teacher itself, "
                                 "the transformer control), mamba2 or mamba1 (causal).", choices=ARCHITECTURES)
    layers: int = setting(6, "Student layers (bimamba2 and bert keep the teacher's).", low=1)
    align_steps: int = setting(1500, "bimamba2: steps aligning each mixer with the attention it replaces.", low=0)
    align_batch_size: int = setting(64, "Passages per alignment step.", low=1)
    align_learning_rate: float = setting(1e-3, "Alignment learning rate.", low=0.0)
    depth: int = setting(20, "Teacher's top passages per query in each group.", low=1)
    n_random: int = setting(10, "Random pool passages added to each group.", low=0)
    bi_steps: int = setting(1500, "Bi-encoder training steps.", low=1)
    cross_steps: int = setting(2500, "Cross-encoder training steps.", low=1)
    bi_queries_per_step: int = setting(16, "Queries per bi-encoder step.", low=1)
    cross_queries_per_step: int = setting(16, "Queries per cross-encoder step.", low=1)
    group_size: int = setting(8, "Passages per query and step (sampled from its group).", low=2)
    bi_learning_rate: float = setting(1e-4, "Bi-encoder learning rate.", low=0.0)
    cross_learning_rate: float = setting(1e-4, "Cross-encoder learning rate.", low=0.0)
    warmup_steps: int = setting(100, "Linear warm-up steps of each training stage.", low=0)
    temperature: float = setting(0.05, "Temperature of the listwise KL loss.", low=0.0)
    embedding_weight: float = setting(1.0, "Weight of the cosine distance to the teacher's vectors (bi-encoder).",
                                       low=0.0, closed=True)
    hidden_weight: float = setting(1.0, "Weight of the distance to the teacher's hidden states, layer by layer "
                                    "(bimamba2 and bert students).", low=0.0, closed=True)
    cross_pooling: str = setting("pair", "Cross-encoder score: pair (cosine of its query and passage segments), "
                                  "last, cls or mean.", choices=POOLINGS)
    max_length: int = setting(256, "Max tokens per sequence.", low=8)
    seed: int = setting(42, "Seed of the student's initialisation, the groups and the training order.")

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown student architecture {self.architecture!r}; choose one of "
                             f"{', '.join(ARCHITECTURES)}")
        if self.cross_pooling not in POOLINGS:
            raise ValueError(f"unknown cross-encoder pooling {self.cross_pooling!r}; choose one of "
                             f"{', '.join(POOLINGS)}")
        if self.cross_pooling == "pair" and self.architecture not in TEACHER_SHAPED:
            raise ValueError(f"'pair' pooling reads the query and passage segments of an encoder; a causal "
                             f"{self.architecture} student needs --cross-pooling last or mean")


def build_groups(output: Path, teachers: list[str], weights: list[float] | None, queries: list[str],
                 passages: list[str], recipe: Recipe, device: str | None) -> list[Group]:
    """The groups of the teacher (or the weighted ensemble of teachers: ``teachers.combine``), computed once and kept
    in ``output/groups.npz`` with the teachers, weights and settings that made them."""
    from ..modeling.auto import load_model
    from .teachers import ensemble_groups, to_groups

    path = output / GROUPS_FILE
    made_by = json.dumps({"teachers": teachers, "weights": weights or [1.0] * len(teachers), "depth": recipe.depth,
                          "n_random": recipe.n_random, "seed": recipe.seed})
    if path.is_file():
        data = np.load(path)
        if data["indices"].shape != (len(queries), recipe.depth + recipe.n_random) or (
                "teachers" in data and str(data["teachers"]) != made_by):
            raise ValueError(f"{path} was built for other data, teachers or settings: remove it to rebuild")
        return to_groups(queries, passages, data["indices"], data["scores"])
    models = [load_model(t) for t in teachers]
    indices, scores = ensemble_groups(models, weights, queries, passages, recipe.depth, recipe.n_random, recipe.seed,
                                      device=device)
    output.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        np.savez(f, indices=indices.astype(np.int32), scores=scores, teachers=np.array(made_by))
    return to_groups(queries, passages, indices, scores)


def distill(teachers: str | list[str], queries: list[str], passages: list[str], output: str | Path, recipe: Recipe,
            device: str | None = None, resume: bool = False, weights: list[float] | None = None) -> dict[str, Path]:
    """Run the recipe into ``output``, with the groups and scores of ``teachers`` (one, or a weighted ensemble whose
    first member is the teacher the student starts from and matches):

    1. ``student/``: the student at its start (:func:`init_student`); a ``bimamba2`` one is then aligned layer by
       layer with the teacher over the queries and passages (:func:`align_mixers`, log in ``align_log.jsonl``);
    2. ``bi-encoder/``: listwise KL over the teacher's groups, plus the cosine distance to the teacher's vectors and
       (students of its shape) the squared distance to its hidden states; mean pooling, cosine;
    3. ``cross-encoder/``: the bi-encoder's backbone with ``pair`` pooling (the cosine of the mean states of the query
       and passage segments of the one sequence), the same KL.
    A stage whose model is already there is skipped (and stage 1 with stage 2); ``resume`` continues stage 2 or 3
    from its latest checkpoint (the short stage 1 starts again)."""
    from ..modeling.auto import load_model
    from ..modeling.backbone import SAFETENSORS
    from ..modeling.bi_encoder import MambaBiEncoder
    from ..modeling.cross_encoder import MambaCrossEncoder
    from .trainer import Trainer, TrainingArguments

    teachers = [teachers] if isinstance(teachers, (str, Path)) else [str(t) for t in teachers]
    teacher = teachers[0]
    check_recipe(teacher, recipe)
    output = Path(output)
    groups = build_groups(output, teachers, weights, queries, passages, recipe, device)
    random.Random(recipe.seed).shuffle(groups)
    with atomic_write(output / "recipe.json") as f:
        json.dump({"teacher": teacher, "teachers": teachers, "teacher_weights": weights or [1.0] * len(teachers),
                   **dataclasses.asdict(recipe)}, f, indent=2)
    stages = {name: output / name for name in ("student", "bi-encoder", "cross-encoder")}
    same_shape = recipe.architecture in TEACHER_SHAPED
    teacher_model = None
    need_bi = not (stages["bi-encoder"] / SAFETENSORS).is_file()
    if need_bi and (recipe.embedding_weight or same_shape):
        teacher_model = load_model(teacher, kind="bi-encoder", max_length=recipe.max_length)  # truncates as the student
    if need_bi and not (stages["student"] / SAFETENSORS).is_file():
        backbone, tokenizer = init_student(teacher, recipe.architecture, recipe.layers, recipe.seed)
        model = MambaBiEncoder.from_backbone(backbone, tokenizer, pooling="mean", normalize=True,
                                             max_length=recipe.max_length)
        if recipe.architecture == "bimamba2" and recipe.align_steps:
            history = align_mixers(backbone, teacher_model, queries + passages, recipe.align_steps,
                                   recipe.align_batch_size, recipe.align_learning_rate, recipe.seed, device)
            stages["student"].mkdir(parents=True, exist_ok=True)
            with atomic_write(stages["student"] / "align_log.jsonl") as f:
                f.writelines(json.dumps(entry) + "\n" for entry in history)
        model.save_pretrained(stages["student"])
    common = {"group_size": recipe.group_size, "warmup_steps": recipe.warmup_steps, "temperature": recipe.temperature,
              "loss": "kl", "seed": recipe.seed, "device": device, "save_steps": 500, "log_steps": 50}
    if need_bi:
        model = MambaBiEncoder.from_pretrained(stages["student"])
        args = TrainingArguments(str(stages["bi-encoder"]), queries_per_step=recipe.bi_queries_per_step,
                                 learning_rate=recipe.bi_learning_rate, max_steps=recipe.bi_steps,
                                 embedding_weight=recipe.embedding_weight,
                                 hidden_weight=recipe.hidden_weight if same_shape else 0.0, **common)
        Trainer(model, groups, args, teacher=teacher_model).train(resume=resume)
        model.save_pretrained(stages["bi-encoder"], dtype=torch.float16)  # what ships; checkpoints keep fp32
    if not (stages["cross-encoder"] / SAFETENSORS).is_file():
        model = MambaCrossEncoder.from_backbone_of(stages["bi-encoder"], max_length=recipe.max_length,
                                                   pooling=recipe.cross_pooling)
        args = TrainingArguments(str(stages["cross-encoder"]), queries_per_step=recipe.cross_queries_per_step,
                                 learning_rate=recipe.cross_learning_rate, max_steps=recipe.cross_steps, **common)
        Trainer(model, groups, args).train(resume=resume)
        model.save_pretrained(stages["cross-encoder"], dtype=torch.float16)
    return stages
