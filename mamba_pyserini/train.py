"""``python -m mamba_pyserini.train``: train cross-encoders and bi-encoders, mine hard negatives, score with a teacher.

Runs on one GPU, on CPU, or under ``torchrun --nproc_per_node N`` (DistributedDataParallel)."""
from __future__ import annotations

import click

from ._cli import field_options, handle_errors, info, kernel_option, option_group

CONTEXT = {"help_option_names": ["-h", "--help"]}


@click.group(context_settings=CONTEXT)
def main():
    """Train Mamba (or transformer) rerankers and encoders with the RankMamba recipe."""


_data_options = option_group(
    click.option("--data", required=True, help="Training groups: FlagEmbedding JSONL ({query, pos, neg[, pos_scores, "
                                               "neg_scores]}), or TSV triples of texts or (with --collection and "
                                               "--queries) of ids."),
    click.option("--collection", help="Passages for id triples: JSONL {id, contents} or TSV id<TAB>text."),
    click.option("--queries", help="Queries for id triples: TSV qid<TAB>query, or a topic name as --topics takes "
                                   "(dl19, msmarco-passage-dev-subset, ...)."),
)


def _read_groups(data, collection, queries):
    """Training groups from the data options, where ``queries`` may also name a topic set."""
    import os

    from .topics import load_topics
    from .training.data import read_groups

    if queries is not None and not os.path.exists(queries):
        queries = load_topics(queries).queries
    return read_groups(data, collection, queries)


def _training_options(kind: str):
    """The options every kind of training takes; the losses and their defaults are ``training.losses``'."""
    from .training.losses import LOSSES, TEMPERATURES
    from .training.trainer import TrainingArguments

    return option_group(
        click.option("--model", required=True, help="Start from: a hub id or directory (a plain backbone such as "
                                                    "state-spaces/mamba-130m-hf, or a saved model of this kind)."),
        click.option("--init", type=click.Choice(["pretrained", "random"]), default="pretrained", show_default=True,
                     help="'random': only the model's config and tokenizer, with fresh weights."),
        _data_options,
        click.option("--output", required=True, help="Directory for the final model, checkpoints and the log."),
        click.option("--loss", type=click.Choice(LOSSES[kind]), default=LOSSES[kind][0], show_default=True,
                     help="margin-mse and kl distil the teacher scores in --data."),
        field_options(TrainingArguments),
        click.option("--temperature", default=TEMPERATURES[kind], show_default=True,
                     type=click.FloatRange(0, min_open=True),
                     help="Divides the scores in the KL loss (and a bi-encoder's similarities in every loss)."),
        click.option("--max-length", type=click.IntRange(8), help="Max tokens per sequence [the model's, or 512]."),
        click.option("--lora-targets", default="in_proj,x_proj,embeddings", show_default=True,
                     help="Comma-separated module names (peft refuses out_proj on Mamba models)."),
        click.option("--no-bf16", is_flag=True, help="fp32 on GPU."),
        click.option("--device", default="auto", show_default=True),
        kernel_option,
        click.option("--resume", is_flag=True, help="Continue from the latest checkpoint in --output."),
        click.option("--stop-after-steps", type=click.IntRange(1),
                     help="Stop (with a checkpoint) after N steps of this session; --resume continues."),
    )


def _train(model_class, model, init, data, collection, queries, output, max_length, lora_targets, no_bf16, device,
           resume, stop_after_steps, model_overrides=None, **settings):
    from transformers import AutoTokenizer, set_seed

    from ._io import check_writable
    from .modeling.backbone import load_backbone_config
    from .training.trainer import Trainer, TrainingArguments

    args = TrainingArguments(output, lora_targets=tuple(t.strip() for t in lora_targets.split(",") if t.strip()),
                             bf16=not no_bf16, device=device, **settings)
    check_writable(output, directory=True)
    groups = _read_groups(data, collection, queries)
    set_seed(args.seed)  # a random initialisation is the seed's too
    overrides = {**(model_overrides or {}), **({"max_length": max_length} if max_length else {})}
    if init == "random":
        net = model_class.from_backbone_config(load_backbone_config(model), AutoTokenizer.from_pretrained(model),
                                               **overrides)
    else:
        net = model_class.from_pretrained(model, **overrides)
    info(f"training a {net.KIND} from {model} ({init}, {sum(p.numel() for p in net.parameters()) / 1e6:.1f}M "
         f"parameters) on {len(groups)} groups")
    history = Trainer(net, groups, args).train(resume=resume, stop_after=stop_after_steps)
    if history:
        info(f"step {history[-1]['step']}: loss {history[-1]['loss']:.4f}")


@main.command("cross-encoder", context_settings=CONTEXT)
@_training_options("cross-encoder")
@handle_errors
def cross_encoder(**kwargs):
    """Train a MambaCrossEncoder: softmax cross-entropy over 1 positive + 7 negatives (or distil a teacher)."""
    from .modeling.cross_encoder import MambaCrossEncoder

    _train(MambaCrossEncoder, **kwargs)


@main.command("bi-encoder", context_settings=CONTEXT)
@_training_options("bi-encoder")
@click.option("--pooling", type=click.Choice(["last", "mean", "cls"]),
              help="[last for causal models, cls for encoders]")
@click.option("--normalize/--no-normalize", default=None, help="L2-normalise vectors (cosine similarity).")
@click.option("--query-prefix", help="Text prepended to every query.")
@click.option("--document-prefix", help="Text prepended to every document.")
@click.option("--no-in-batch-negatives", is_flag=True, help="Only each query's own negatives compete.")
@handle_errors
def bi_encoder(pooling, normalize, query_prefix, document_prefix, no_in_batch_negatives, **kwargs):
    """Train a MambaBiEncoder contrastively: in-batch plus hard negatives, with a temperature."""
    from .modeling.bi_encoder import MambaBiEncoder

    settings = {"pooling": pooling, "normalize": normalize, "query_prefix": query_prefix,
                "document_prefix": document_prefix}
    _train(MambaBiEncoder, model_overrides={k: v for k, v in settings.items() if v is not None},
           in_batch_negatives=not no_in_batch_negatives, **kwargs)


@main.command("mine-negatives", context_settings=CONTEXT)
@click.option("--run", "run_file", required=True, help="First-stage TREC run (e.g. BM25 top-1000 on train queries).")
@click.option("--qrels", required=True, help="Qrels: judged relevant docids are the positives.")
@click.option("--output", required=True, help="TSV groups 'qid<TAB>pos_pid<TAB>neg_pid...' (train with --collection "
                                               "and --queries).")
@click.option("--negatives", default=30, show_default=True, type=click.IntRange(1), help="Negatives per query.")
@click.option("--seed", default=42, show_default=True)
@handle_errors
def mine_negatives(run_file, qrels, output, negatives, seed):
    """Sample hard negatives from the hits ranked below each query's best-ranked positive."""
    from ._io import check_writable
    from .runs import read_qrels, read_run
    from .training.data import mine_negatives as mine
    from .training.data import write_rows

    check_writable(output)
    rows = mine(read_run(run_file), read_qrels(qrels), negatives, seed)
    write_rows(rows, output)
    info(f"{len(rows)} rows (one per positive) for {len({r[0] for r in rows})} queries written to {output}")


@main.command("score-teacher", context_settings=CONTEXT)
@click.option("--teacher", "teachers", required=True, multiple=True,
              help="A cross-encoder, bi-encoder or SPLADE checkpoint (e.g. a sentence-transformers directory). Repeat "
                   "it for an ensemble: per group, each teacher's z-scores summed with --teacher-weight, on the first "
                   "teacher's scale.")
@click.option("--teacher-weight", "weights", multiple=True, type=click.FloatRange(0.0),
              help="One weight per --teacher, in order [1 each].")
@_data_options
@click.option("--output", required=True, help="FlagEmbedding JSONL with pos_scores and neg_scores.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
@click.option("--device", default="auto", show_default=True)
@kernel_option
@handle_errors
def score_teacher(teachers, weights, data, collection, queries, output, batch_size, device):
    """Score every (query, passage) pair of the training groups with a teacher or an ensemble of teachers, for
    MarginMSE / KL distillation."""
    from ._io import check_writable
    from .modeling.auto import load_model
    from .training.data import write_groups
    from .training.teachers import score_groups

    if weights and len(weights) != len(teachers):
        raise ValueError(f"{len(weights)} --teacher-weight for {len(teachers)} --teacher")
    check_writable(output)
    groups = _read_groups(data, collection, queries)
    groups = score_groups([load_model(t) for t in teachers], list(weights) or None, groups, batch_size, device)
    write_groups(groups, output)
    info(f"{len(groups)} scored groups written to {output}")


if __name__ == "__main__":
    main()
