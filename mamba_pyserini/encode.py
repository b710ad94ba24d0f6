"""``python -m mamba_pyserini.encode``: a collection -> bi-encoder vectors -> a FAISS index in Pyserini's layout.

Under ``torchrun --nproc_per_node N`` each process encodes one contiguous shard and the first merges them."""
from __future__ import annotations

import os

import click

from ._cli import handle_errors, info, kernel_option


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", help="MambaBiEncoder checkpoint, or a sentence-transformers directory.")
@click.option("--corpus", help='Collection: JSONL ({"id","contents"}) or TSV (id<TAB>text).')
@click.option("--output", required=True, help="FAISS index directory to write (index + docid, Pyserini's layout).")
@click.option("--hnsw", "hnsw_m", type=click.IntRange(4), help="Build an HNSW index with M links [flat inner product].")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
@click.option("--max-length", type=click.IntRange(8), help="Override the checkpoint's max length in tokens.")
@click.option("--device", default="auto", show_default=True)
@kernel_option
@click.option("--shard-id", type=click.IntRange(0), help="Encode only this shard (0-based) [RANK under torchrun].")
@click.option("--shard-num", type=click.IntRange(1), help="Number of shards [WORLD_SIZE under torchrun, else 1].")
@click.option("--merge-shards", is_flag=True, help="Only merge OUTPUT/shard-* (written with --shard-id) into OUTPUT.")
@click.option("--overwrite", is_flag=True, help="Replace an existing index directory.")
@handle_errors
def main(model, corpus, output, hnsw_m, batch_size, max_length, device, shard_id, shard_num, merge_shards,
         overwrite):
    """Encode CORPUS with a bi-encoder into a FAISS index that Pyserini's FaissSearcher loads."""
    from .dense import encode_corpus, read_faiss_index
    from .dense import merge_shards as merge

    world = int(os.environ.get("WORLD_SIZE", "1"))
    shard_num = shard_num or world
    if merge_shards:
        info(f"merged {shard_num} shards into {merge(output, shard_num, hnsw_m)}")
        return
    if not model or not corpus:
        raise click.UsageError("--model and --corpus are required (unless --merge-shards)")
    if shard_id is None:
        shard_id = int(os.environ.get("RANK", "0")) if world > 1 else 0
    from .modeling.auto import load_model

    device = _local_device(device, world)
    encoder = load_model(model, kind="bi-encoder", **({"max_length": max_length} if max_length else {}))
    written = encode_corpus(encoder, corpus, output, batch_size, device, hnsw_m, shard_id, shard_num, overwrite,
                            show_progress_bar=True)
    if world > 1:  # torchrun: wait for every shard, then the first process merges
        import torch.distributed as dist

        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        dist.barrier()
        if dist.get_rank() == 0:
            written = merge(output, shard_num, hnsw_m)
        dist.barrier()
        dist.destroy_process_group()
    if shard_num == 1 or world > 1:
        index, _ = read_faiss_index(output)
        info(f"{index.ntotal} documents x {index.d} dimensions indexed in {output}")
    else:
        info(f"shard {shard_id} of {shard_num} written to {written}; merge with --merge-shards")


def _local_device(device: str, world: int) -> str:
    from .modeling.base import resolve_device

    device = resolve_device(device)
    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if world > 1 and device == "cuda" else device


if __name__ == "__main__":
    main()
