"""Mamba-2 130M packed reranking (the bench's DL19 workload) and training on the GPU, with each packed mixer run as
transformers runs it in inference (``Mamba2Mixer.forward``: PyTorch gated RMSNorm) or through mamba_ssm's fused
mixer (``_kernels.mamba2_ops``), plus a kernel-time profile of each (CUDA graphs off, so that kernels show).
``OUT=DIR python experiments/mamba2-kernel-paths/mamba2_rerank.py`` (GPU, with mamba_ssm and causal_conv1d) writes
DIR/mamba2_rerank.json and the profiles' tables to the log; the H100 run is ``mamba2_rerank.h100.json`` beside it
(made before Mamba-2 packed into one row: in rows of 1,024 tokens, and with transformers' default initialisation, as
the bench then did)."""
import json
import os
from unittest.mock import patch

import torch
from transformers import AutoTokenizer

import mamba_pyserini.modeling.packing as packing
from mamba_pyserini._kernels import GRAPHS_ENV, kernels_for
from mamba_pyserini._paths import TOPICS_DIR
from mamba_pyserini.bench import FIXTURES, TOKENIZERS, Bench, model_configs, training_steps
from mamba_pyserini.candidates import bundled_candidates
from mamba_pyserini.corpus import read_collection
from mamba_pyserini.modeling.cross_encoder import MambaCrossEncoder

tok_name, config = model_configs(False)["mamba2-130m"]
tokenizer = AutoTokenizer.from_pretrained(FIXTURES / TOKENIZERS[tok_name])
queries = read_collection(TOPICS_DIR / "topics.dl19-passage.txt")
run, texts = bundled_candidates("dl19-passage")
pairs = [(queries[q], texts[h.docid]) for q, hits in run.items() for h in hits]
bench = Bench("cuda", 10, 8192, repeats=5)
MIXERS = {"transformers": lambda mixer, hidden, seq_idx, mix: mixer(hidden, seq_idx=seq_idx),
          "fused": packing._mamba2_mixer}


def make_model():
    torch.manual_seed(0)
    return MambaCrossEncoder.from_backbone_config(config, tokenizer).cuda()


def profile(run, label):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.self_device_time_total > 0]
    events.sort(key=lambda e: -e.self_device_time_total)
    print(f"== {label}\n" + prof.key_averages().table(sort_by="self_device_time_total", row_limit=25), flush=True)
    return {"total_ms": sum(e.self_device_time_total for e in events) / 1e3,
            "top": [{"name": e.key[:120], "ms": e.self_device_time_total / 1e3, "calls": e.count}
                    for e in events[:25]]}


results = {"device": torch.cuda.get_device_name(0)}
batches = None
for name, mixer in MIXERS.items():
    with patch.object(packing, "_mamba2_mixer", mixer), kernels_for("cuda"):
        model = make_model()
        batches = batches or [model.tokenize([q for q, _ in s], [d for _, d in s]) for s in training_steps(12)]
        results[name] = {"rerank": bench.rerank(model, pairs, pack=True),
                         "train": bench.train(model, batches, "packed"),
                         "packed_vs_padded": bench.check_packing(model, batches[0])}
        print(name, json.dumps(results[name]), flush=True)
        with patch.dict(os.environ, {GRAPHS_ENV: "0"}):
            model = make_model()
            model.packing = True
            model.predict(pairs, batch_size=128, device="cuda")
            results[name]["rerank_profile"] = profile(
                lambda: model.predict(pairs, batch_size=128, device="cuda"), f"{name} rerank, eager")
            optimizer = bench.optimizer(model)
            for features in batches[:2]:
                bench.step(model, optimizer, features, "packed")
            results[name]["train_profile"] = profile(
                lambda: [bench.step(model, optimizer, f, "packed") for f in batches[2:5]], f"{name} train x3, eager")
with open(os.path.join(os.environ.get("OUT", "."), "mamba2_rerank.json"), "w") as f:
    json.dump(results, f, indent=1)
print(json.dumps({k: {w: round(v[w]["seq_per_s"], 1) for w in ("rerank", "train")} for k, v in results.items()
                  if k != "device"}))
