"""How sensitive the bench's random-init 130M Mamba rerankers are to rounding, with transformers' default
initialisation (``initializer_range`` 0.1) and with mamba_ssm's (0.02, out-projections scaled by depth), which
``bench.model_configs`` uses: on the CPU reference path, the largest change of 16 pairs' scores (relative to the
largest score) when the embeddings are scaled by 1 + eps * N(0, 1), when bf16 autocast replaces fp32, and between
packed and right-padded batches in fp32.
``python experiments/init-sensitivity/init_sensitivity.py OUT.json`` (about 15 minutes on 2 cores);
``init_sensitivity.json`` beside it is the committed run."""
import json
import sys

import torch
from transformers import AutoTokenizer

from mamba_pyserini._io import atomic_write
from mamba_pyserini.bench import FIXTURES, TOKENIZERS, max_rel_diff, model_configs, training_steps
from mamba_pyserini.modeling.cross_encoder import MambaCrossEncoder

INITS = {"transformers default": {"initializer_range": 0.1, "rescale_prenorm_residual": False},
         "mamba_ssm (bench)": {"initializer_range": 0.02, "rescale_prenorm_residual": True}}


def measure(name: str, init: dict) -> dict:
    tokenizer_name, config = model_configs(False)[name]
    for key, value in init.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    model = MambaCrossEncoder.from_backbone_config(config, AutoTokenizer.from_pretrained(
        FIXTURES / TOKENIZERS[tokenizer_name])).eval()
    features = model.tokenize(*map(list, zip(*training_steps(1)[0][:16])))
    padded = model.batch(features, "cpu", pack=False)
    out = {}
    with torch.no_grad():
        scores = model(**padded).float()
        embeddings = model.backbone.get_input_embeddings().weight
        saved = embeddings.data.clone()
        for eps in (1e-7, 1e-5, 1e-3):
            torch.manual_seed(1)
            embeddings.data = saved * (1 + eps * torch.randn_like(saved))
            out[f"embeddings x (1 + {eps:g} N(0,1))"] = max_rel_diff(model(**padded).float(), scores)
        embeddings.data = saved
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out["bf16 vs fp32"] = max_rel_diff(model(**padded).float(), scores)
        out["packed vs padded, fp32"] = max_rel_diff(model(**model.batch(features, "cpu", pack=True)).float(), scores)
    print(name, json.dumps(init), json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    torch.set_num_threads(2)
    report = {name: {label: {**init, **measure(name, init)} for label, init in INITS.items()}
              for name in ("mamba1-130m", "mamba2-130m")}
    with atomic_write(sys.argv[1]) as f:
        json.dump(report, f, indent=1)
