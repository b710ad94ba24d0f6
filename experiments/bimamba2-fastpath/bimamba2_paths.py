"""GPU check of BiMamba-2's two kernel paths, the script behind bimamba2-fastpath.h100.json (beside it):

    python experiments/bimamba2-fastpath/bimamba2_paths.py OUT.json [BI_ENCODER_DIR] [GROUPS_NPZ]

(the fast path when mamba_ssm is importable). It encodes the DL19 candidate passages twice (bf16), runs an fp32 forward
of 64 of them (OUT.json.vectors.npy, OUT.json.fp32.npy, for comparing paths) and 100 cross-encoder training steps from
the bi-encoder's backbone over a distillation run's groups.npz. The defaults are the paths of the recorded run."""
import json
import random
import sys
import time

import numpy as np
import torch

from mamba_pyserini._kernels import kernel_info
from mamba_pyserini.candidates import bundled_candidates
from mamba_pyserini.corpus import read_collection
from mamba_pyserini.distill import POOL, TRAIN_QUERIES, read_texts
from mamba_pyserini.modeling.auto import load_model
from mamba_pyserini.modeling.cross_encoder import MambaCrossEncoder
from mamba_pyserini.training.teachers import to_groups
from mamba_pyserini.training.trainer import Trainer, TrainingArguments

bi = sys.argv[2] if len(sys.argv) > 2 else "/tmp/w/bimamba/bi-encoder"
res = {"kernels": kernel_info()}
m = load_model(bi)
run, texts = bundled_candidates("dl19-passage")
docs = [texts[d] for d in sorted({h.docid for hs in run.values() for h in hs})]
for i in range(2):
    torch.cuda.synchronize()
    t = time.time()
    v = m.encode_documents(docs, batch_size=256, device="cuda")
    torch.cuda.synchronize()
    res[f"encode_s_{i}"] = time.time() - t
np.save(sys.argv[1] + ".vectors.npy", v)
with torch.no_grad():  # fp32, no autocast
    f = m.tokenize(docs[:64], False)
    b = {k: x.cuda() for k, x in m.collate(f, 8).items()}
    np.save(sys.argv[1] + ".fp32.npy", m(**b).float().cpu().numpy())
queries, passages = read_texts(TRAIN_QUERIES), list(read_collection(POOL).values())
data = np.load(sys.argv[3] if len(sys.argv) > 3 else "/tmp/w/bimamba/groups.npz")
groups = to_groups(queries, passages, data["indices"], data["scores"])
random.Random(42).shuffle(groups)
ce = MambaCrossEncoder.from_backbone_of(bi, max_length=256, pooling="pair")
args = TrainingArguments(sys.argv[1] + ".train", queries_per_step=16, group_size=8, loss="kl", temperature=0.05,
                         learning_rate=1e-4, max_steps=100, warmup_steps=10, log_steps=10, save_steps=1000, seed=42)
t = time.time()
hist = Trainer(ce, groups, args).train()
res["train_100_s"] = time.time() - t
res["losses"] = [h["loss"] for h in hist]
res["seqs_per_s"] = [h.get("seqs_per_s") for h in hist]
with open(sys.argv[1], "w") as out:
    json.dump(res, out, indent=1)
print(json.dumps(res))
