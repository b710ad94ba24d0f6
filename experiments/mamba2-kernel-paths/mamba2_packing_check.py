"""Mamba-2 130M packed vs padded scores in fp32 on the GPU: mamba_ssm's kernels against our PyTorch reference (no TF32),
to tell packing errors from kernel precision.
``OUT=DIR python experiments/mamba2-kernel-paths/mamba2_packing_check.py`` (GPU, with mamba_ssm and causal_conv1d)
writes DIR/check_m2.json; the H100 run is ``mamba2_packing_check.h100.json`` beside it (with transformers' default
initialisation, as the bench then did)."""
import json
import os
from unittest.mock import patch

import torch
from transformers import AutoTokenizer

import mamba_pyserini._kernels as K
from mamba_pyserini.bench import FIXTURES, TOKENIZERS, model_configs, training_steps
from mamba_pyserini.modeling.cross_encoder import MambaCrossEncoder

torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
tok_name, cfg = model_configs(False)["mamba2-130m"]
tok = AutoTokenizer.from_pretrained(FIXTURES / TOKENIZERS[tok_name])
torch.manual_seed(0)
model = MambaCrossEncoder.from_backbone_config(cfg, tok).cuda().eval()
feats = model.tokenize(*map(list, zip(*training_steps(1)[0])))

def scores(path, pack):
    with patch.object(K, "kernel_path", lambda device: path), K.kernels_for("cuda"), torch.no_grad():
        return model(**model.batch(feats, "cuda", pack=pack)).float()

s = {(p, k): scores(p, k) for p in ("ref", "fast") for k in (False, True)}


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


out = {"ref packed vs ref padded": rel(s["ref", True], s["ref", False]),
       "fast packed vs fast padded": rel(s["fast", True], s["fast", False]),
       "fast padded vs ref padded": rel(s["fast", False], s["ref", False]),
       "fast packed vs ref padded": rel(s["fast", True], s["ref", False]),
       "fast packed vs ref packed": rel(s["fast", True], s["ref", True])}
print(json.dumps(out, indent=1))
json.dump(out, open(os.environ.get("OUT", ".") + "/check_m2.json", "w"), indent=1)
