"""Trainer: the RankMamba recipe for cross-encoders and contrastive training for bi-encoders, with exact resume
and DistributedDataParallel under ``torchrun``.

Every micro-batch is a pure function of (seed, step): which groups it holds and which negatives they sample, so a
resumed run sees exactly the data an uninterrupted one would. A checkpoint holds the weights, AdamW's state, the
scheduler, every process's RNG and the step, all in safetensors + JSON."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from .._cli import setting
from .._io import atomic_write, check_writable, load_safetensors
from .._kernels import kernels_for
from ..modeling.base import RankingModel, resolve_device
from .data import Group, group_order, sample_group
from .losses import LOSSES, TEACHER_LOSSES, TEMPERATURES, in_batch_contrastive, ranking_loss

log = logging.getLogger("mamba_pyserini")
# peft refuses out_proj on Mamba models (mamba_ssm's fused training kernel reads its weight directly).
MAMBA_LORA_TARGETS = ("in_proj", "x_proj", "embeddings")
LOG_FILE, STATE_FILE, CHECKPOINTS = "train_log.jsonl", "trainer_state.json", "checkpoints"


@dataclasses.dataclass
class TrainingArguments:
    """Defaults are the paper's recipe: 8 queries x (1 positive + 7 negatives) per step, softmax cross-entropy,
    AdamW lr 2e-5 with 1,000 warm-up steps then linear decay, one epoch, bf16 autocast on GPU."""

    output_dir: str
    loss: str | None = None  # ce for cross-encoders, contrastive for bi-encoders
    group_size: int = setting(8, "1 positive + N-1 negatives per query.", low=2)
    queries_per_step: int = setting(8, "Queries per micro-batch and process.", low=1)
    accumulation_steps: int = setting(1, "Micro-batches per optimizer step.", low=1)
    learning_rate: float = setting(2e-5, "AdamW's learning rate.", low=0.0, flag="--lr")
    warmup_steps: int = setting(1000, "Linear warm-up, then linear decay.", low=0)
    weight_decay: float = setting(0.01, "AdamW's weight decay.", low=0.0, closed=True)
    max_grad_norm: float | None = setting(None, "Clip gradients to this norm.", low=0.0, type=float)
    epochs: float = setting(1.0, "Passes over the training groups.", low=0.0)
    max_steps: int | None = setting(None, "Optimizer steps (overrides --epochs).", low=1, type=int)
    temperature: float | None = None  # KL temperature (bi-encoders also divide similarities by it); None: the kind's
    in_batch_negatives: bool = True  # bi-encoders: other queries' passages are negatives too
    embedding_weight: float = 1.0  # bi-encoders with a teacher: weight of the cosine distance to its vectors
    hidden_weight: float = 0.0  # ... and of the mean squared distance to its hidden states, layer by layer
    save_steps: int = setting(1000, "Checkpoint every N steps.", low=1)
    save_total_limit: int = setting(2, "Checkpoints kept.", low=1)
    log_steps: int = setting(10, "Log every N steps.", low=1)
    seed: int = setting(42, "Seed of the data order and of a random initialisation.")
    lora: bool = setting(False, "Train LoRA adapters (merged into the saved model).")
    lora_r: int = setting(64, "LoRA rank.", low=1)
    lora_alpha: int = setting(128, "LoRA alpha.", low=1)
    lora_targets: tuple[str, ...] = MAMBA_LORA_TARGETS
    bf16: bool = True
    device: str | None = None
    show_progress_bar: bool = True

    def __post_init__(self):
        if self.group_size < 2:
            raise ValueError(f"group size must be at least 2 (a positive and a negative), not {self.group_size}")
        for name in ("queries_per_step", "accumulation_steps", "save_steps", "log_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be at least 1")


class Trainer:
    """Trains a :class:`MambaCrossEncoder` or :class:`MambaBiEncoder` on :class:`Group` s; ``train()`` writes the
    final model (``save_pretrained`` form) to ``output_dir``, checkpoints under ``output_dir/checkpoints`` and a JSONL
    log of loss, learning rate and tokens/s."""

    def __init__(self, model: RankingModel, groups: list[Group], args: TrainingArguments,
                 teacher: RankingModel | None = None):
        losses = LOSSES[model.KIND]
        args = dataclasses.replace(args, loss=args.loss or losses[0],
                                   temperature=args.temperature or TEMPERATURES[model.KIND])
        if args.loss not in losses:
            raise ValueError(f"unknown {model.KIND} loss {args.loss!r}; choose one of {', '.join(losses)}")
        if args.loss in TEACHER_LOSSES and not all(g.has_scores for g in groups):
            raise ValueError(f"the {args.loss} loss needs teacher scores for every group (see `train score-teacher`)")
        if not groups:
            raise ValueError("no training groups")
        if teacher is not None and (model.KIND, teacher.KIND) != ("bi-encoder", "bi-encoder"):
            raise ValueError("a teacher's vectors can only be regressed by a bi-encoder from a bi-encoder")
        self.model, self.groups, self.args, self.teacher = model, groups, args, teacher
        self.output = Path(args.output_dir)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.device = resolve_device(args.device)
        if self.world > 1:
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.startswith("cuda") else "gloo")
            if self.device.startswith("cuda"):
                self.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
                torch.cuda.set_device(self.device)
        self.rank = dist.get_rank() if self.world > 1 else 0
        self.on_gpu = self.device.startswith("cuda")
        self.global_queries = args.queries_per_step * args.accumulation_steps * self.world
        self.total_steps = args.max_steps or math.ceil(args.epochs * len(groups) / self.global_queries)

    # -- one step --------------------------------------------------------------------------------------------------
    def _micro_batch(self, step: int, micro: int) -> tuple[list[str], list[str], torch.Tensor | None]:
        """Queries, their candidates (Q x G, positive first) and teacher scores of this process's micro-batch."""
        a = self.args
        start = step * self.global_queries + (micro * self.world + self.rank) * a.queries_per_step
        queries, docs, teacher = [], [], []
        for position, index in zip(range(start, start + a.queries_per_step),
                                   group_order(len(self.groups), a.seed, start, a.queries_per_step)):
            texts, scores = sample_group(self.groups[index], a.group_size, random.Random(f"{a.seed}:{position}"))
            queries.append(self.groups[index].query)
            docs += texts
            teacher.append(scores)
        has_teacher = all(t is not None for t in teacher)
        return queries, docs, torch.tensor(teacher, device=self.device) if has_teacher else None

    def _loss(self, model, queries, docs, teacher) -> tuple[torch.Tensor, int, int]:
        """The micro-batch's loss, its real (non-pad) tokens and its sequences."""
        a, n = self.args, len(queries)
        if self.model.KIND == "cross-encoder":
            features = self.model.tokenize([q for q in queries for _ in range(a.group_size)], docs)
        else:
            features = self.model.tokenize(queries, True) + self.model.tokenize(docs, False)
        layers = self.teacher is not None and a.hidden_weight > 0
        batch = self.model.batch(features, self.device, pack=False if layers else None)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.on_gpu and a.bf16):
            out = model(**batch, all_layers=True) if layers else model(**batch)
        out, states = out if layers else (out, None)
        sizes = int(batch["attention_mask"].sum()), len(features)
        if self.model.KIND == "cross-encoder":
            return ranking_loss(a.loss, out.view(n, a.group_size), teacher, a.temperature), *sizes
        loss = self._teacher_loss(out.float(), states, batch, queries, docs) if self.teacher is not None else 0.0
        q, d = out[:n].float(), out[n:].float()
        if a.loss == "contrastive" and a.in_batch_negatives:  # every passage of the micro-batch competes
            return loss + in_batch_contrastive(q, d, a.temperature), *sizes
        own = (q[:, None, :] * d.view(n, a.group_size, -1)).sum(-1)  # (Q, G)
        return loss + ranking_loss(a.loss, own, teacher, a.temperature), *sizes

    def _teacher_loss(self, vectors: torch.Tensor, states, batch: dict, queries: list[str],
                      docs: list[str]) -> torch.Tensor:
        """Weighted mean cosine distance between the student's vectors and the teacher's for the same texts, plus
        (with ``states``) the weighted mean squared distance between their hidden states at every layer, over real
        tokens (the two must tokenize alike and have as many layers)."""
        t, a = self.teacher, self.args
        features = t.tokenize(queries, True) + t.tokenize(docs, False)
        theirs = t.batch(features, self.device, pack=False if states is not None else None)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.on_gpu and a.bf16):
            target, target_states = t(**theirs, all_layers=True) if states is not None else (t(**theirs), None)
        cosine = torch.nn.functional.cosine_similarity(vectors, target.float(), dim=-1)
        loss = a.embedding_weight * (1 - cosine).mean()
        if states is None:
            return loss
        if not torch.equal(theirs["input_ids"], batch["input_ids"]) or len(target_states) != len(states):
            raise ValueError("hidden-state distillation needs a student that tokenizes as its teacher does and has "
                             "as many layers")
        mask = batch["attention_mask"].bool()
        squared = [(mine.float()[mask] - ref.float()[mask]).pow(2).mean() for mine, ref in zip(states, target_states)]
        return loss + a.hidden_weight * torch.stack(squared).mean()

    # -- the loop --------------------------------------------------------------------------------------------------
    def train(self, resume: bool = False, stop_after: int | None = None) -> list[dict]:
        """Train to ``total_steps``, continuing from the latest checkpoint when ``resume``; with ``stop_after``, stop
        after that many steps of this session with a checkpoint (time-sliced jobs). Returns this session's log."""
        from tqdm import tqdm
        from transformers import get_linear_schedule_with_warmup, set_seed

        a = self.args
        if not resume and (self.output / CHECKPOINTS).exists():
            raise ValueError(f"{self.output} already holds checkpoints: pass --resume to continue, or choose a new "
                             "output directory")
        check_writable(self.output, directory=True)
        set_seed(a.seed)  # Python, NumPy and torch (dropout, LoRA's initialisation); a resumed run restores torch's
        if a.lora:
            self._wrap_lora()
        self.model.to(self.device).train()
        if self.teacher is not None:
            self.teacher.to(self.device).eval().requires_grad_(False)
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=a.learning_rate, weight_decay=a.weight_decay,
                                      fused=self.on_gpu or None)
        scheduler = get_linear_schedule_with_warmup(optimizer, a.warmup_steps, self.total_steps)
        step = self._resume(optimizer, scheduler) if resume else 0
        model = self.model
        if self.world > 1:
            model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device] if self.on_gpu else None)
        self._truncate_log(step)
        history, stop_at = [], min(self.total_steps, step + stop_after if stop_after else self.total_steps)
        bar = tqdm(total=self.total_steps, initial=step, desc=f"train {self.model.KIND}", unit="step",
                   file=sys.stderr, disable=not a.show_progress_bar or self.rank != 0)
        with kernels_for(self.device, unfused=a.lora):
            while step < stop_at:
                began, loss_sum, tokens, seqs = time.perf_counter(), 0.0, 0, 0
                for micro in range(a.accumulation_steps):
                    last = micro == a.accumulation_steps - 1
                    with model.no_sync() if self.world > 1 and not last else contextlib.nullcontext():
                        loss, n_tokens, n_seqs = self._loss(model, *self._micro_batch(step, micro))
                        if not torch.isfinite(loss):
                            raise RuntimeError(f"the loss became {loss.item()} at step {step + 1}")
                        (loss / a.accumulation_steps).backward()
                    loss_sum += loss.item() / a.accumulation_steps
                    tokens, seqs = tokens + n_tokens, seqs + n_seqs
                if a.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, a.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                loss_sum, tokens, seqs = self._all_reduce(loss_sum, tokens, seqs)
                elapsed = time.perf_counter() - began
                history.append({"step": step, "loss": loss_sum, "lr": scheduler.get_last_lr()[0],
                                "tokens_per_s": tokens / elapsed, "seqs_per_s": seqs / elapsed})
                bar.update()
                bar.set_postfix(loss=f"{loss_sum:.4f}")
                if step % a.log_steps == 0 or step in (stop_at, self.total_steps):
                    self._append_log(history[-1])
                if step < self.total_steps and (step % a.save_steps == 0 or step == stop_at):
                    self._save_checkpoint(step, optimizer, scheduler)
        bar.close()
        if step == self.total_steps:
            self._finish()
        return history

    def _all_reduce(self, loss: float, tokens: int, seqs: int) -> tuple[float, int, int]:
        if self.world == 1:
            return loss, tokens, seqs
        values = torch.tensor([loss, float(tokens), float(seqs)], device=self.device)
        dist.all_reduce(values)
        return values[0].item() / self.world, int(values[1].item()), int(values[2].item())

    def _wrap_lora(self) -> None:
        from peft import LoraConfig, get_peft_model

        a = self.args
        config = LoraConfig(r=a.lora_r, lora_alpha=a.lora_alpha, target_modules=list(a.lora_targets))
        self.model.backbone = get_peft_model(self.model.backbone, config)

    def _finish(self) -> None:
        if self.args.lora:
            self.model.backbone = self.model.backbone.merge_and_unload()
        if self.rank == 0:
            self.model.save_pretrained(self.output)
            with atomic_write(self.output / "training_args.json") as f:
                json.dump({**dataclasses.asdict(self.args), "world_size": self.world,
                           "total_steps": self.total_steps}, f, indent=2)
            log.info("model written to %s", self.output)
        if self.world > 1:
            dist.barrier()

    # -- checkpoints and log ---------------------------------------------------------------------------------------
    def _checkpoint_dir(self, step: int) -> Path:
        return self.output / CHECKPOINTS / f"step-{step:08d}"

    def _save_checkpoint(self, step: int, optimizer, scheduler) -> None:
        """Written beside its final name and renamed in, so an interrupted save leaves no checkpoint behind."""
        final = self._checkpoint_dir(step)
        tmp = final.with_name(final.name + ".tmp")
        try:
            self._write_checkpoint(step, tmp, optimizer, scheduler)
        except BaseException:  # an interrupted save leaves nothing behind
            if self.rank == 0:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        if self.rank == 0:
            tmp.rename(final)
            kept = sorted(p for p in (self.output / CHECKPOINTS).glob("step-*") if not p.name.endswith(".tmp"))
            for old in kept[:-self.args.save_total_limit]:
                shutil.rmtree(old)
        self._barrier()

    def _write_checkpoint(self, step: int, tmp: Path, optimizer, scheduler) -> None:
        from safetensors.torch import save_file

        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            save_file({k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()},
                      tmp / "model.safetensors")
            tensors, meta = _flatten_optimizer(optimizer.state_dict())
            save_file(tensors, tmp / "optimizer.safetensors")
            with open(tmp / STATE_FILE, "w") as f:
                json.dump({"step": step, "optimizer": meta, "scheduler": scheduler.state_dict(),
                           "args": dataclasses.asdict(self.args), "world_size": self.world}, f)
        self._barrier()
        rng = {"cpu": torch.get_rng_state()}
        if self.on_gpu:
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        save_file(rng, tmp / f"rng-{self.rank}.safetensors")
        self._barrier()

    def _resume(self, optimizer, scheduler) -> int:
        found = sorted(p for p in (self.output / CHECKPOINTS).glob("step-*") if not p.name.endswith(".tmp"))
        if not found:
            log.warning("no checkpoint in %s: starting from step 0", self.output / CHECKPOINTS)
            return 0
        path = found[-1]
        state = json.loads((path / STATE_FILE).read_text())
        if state["world_size"] != self.world:
            raise ValueError(f"{path} was written by {state['world_size']} process(es); resume with as many")
        self.model.load_state_dict(load_safetensors(path / "model.safetensors", self.device))
        optimizer.load_state_dict(_unflatten_optimizer(load_safetensors(path / "optimizer.safetensors", self.device),
                                                       state["optimizer"]))
        scheduler.load_state_dict(state["scheduler"])
        rng = load_safetensors(path / f"rng-{self.rank}.safetensors")
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and self.on_gpu:
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        log.info("resumed from %s (step %d of %d)", path, state["step"], self.total_steps)
        return state["step"]

    def _truncate_log(self, step: int) -> None:
        """Keep the log's entries up to ``step`` (a resumed run repeats the steps after its checkpoint)."""
        path = self.output / LOG_FILE
        if self.rank != 0 or not path.is_file():
            return
        kept = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line cut short by the interruption
                if json.loads(line)["step"] <= step:
                    kept.append(line + "\n")
        with atomic_write(path) as f:
            f.writelines(kept)

    def _append_log(self, entry: dict) -> None:
        if self.rank == 0:
            self.output.mkdir(parents=True, exist_ok=True)
            with open(self.output / LOG_FILE, "a") as f:
                f.write(json.dumps(entry) + "\n")

    def _barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer state_dict as safetensors tensors plus JSON (param groups and non-tensor values)."""
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in [*tensors.items(), *meta["scalars"].items()]:
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}
