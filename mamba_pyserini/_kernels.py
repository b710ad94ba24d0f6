"""The only place that probes for mamba_ssm / causal_conv1d and decides the kernel path (fused kernels or the PyTorch
twins in ``ops/``), the compiled BiMamba-2 mixer on CPUs, CUDA graphs and inference precision."""
from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import inspect
import logging
import os

from ._cli import KERNEL_ENV

log = logging.getLogger("mamba_pyserini")
FP32_ENV = "MAMBA_PYSERINI_FP32"  # =1: inference in fp32 everywhere
GRAPHS_ENV = "MAMBA_PYSERINI_CUDA_GRAPHS"  # =0: packed Mamba layers run eagerly, without CUDA graphs
CPU_MIXER_ENV = "MAMBA_PYSERINI_CPU_MIXER"  # =0: BiMamba-2 inference on CPUs without the compiled mixer


@functools.cache
def _version(package: str) -> str | None:
    try:
        import torch  # noqa: F401  (mamba_ssm needs torch imported first)

        module = importlib.import_module(package)
    except Exception:  # ImportError, or a build that does not match this torch/CUDA
        return None
    try:
        return getattr(module, "__version__", None) or importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def kernel_info() -> dict:
    """What fast-kernel packages this process can use."""
    import torch

    return {
        "mamba_ssm": _version("mamba_ssm"),
        "causal_conv1d": _version("causal_conv1d"),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }


@functools.cache
def kernel_path(device: str) -> str:
    """'fast' when mamba_ssm's CUDA kernels serve the Mamba layers on ``device``, else 'ref' (PyTorch); the
    environment's ``MAMBA_PYSERINI_KERNEL`` (``--kernel``) may ask for 'ref' anywhere, or insist on 'fast', which
    fails where the kernels cannot run. transformers binds mamba_ssm at import when it is installed, so the other
    functions here put the choice in place."""
    asked = os.environ.get(KERNEL_ENV, "auto")
    available = device.startswith("cuda") and bool(_version("mamba_ssm"))
    if asked == "fast" and not available:
        needs = "" if device.startswith("cuda") else "a CUDA GPU and "
        raise ValueError(f"--kernel fast: mamba_ssm's kernels cannot run on {device} (they need {needs}the mamba-ssm "
                         f"and causal-conv1d packages: pip install -e '.[gpu]'); --kernel ref runs the PyTorch ops")
    path = "fast" if available and asked != "ref" else "ref"
    log.info("Mamba kernel path on %s: %s (%s)", device, path, kernel_info())
    return path


def ssd_ops(device: str):
    """(chunk_scan, causal_conv1d) for our own Mamba-2 mixers (BiMamba-2): mamba_ssm's Triton chunk scan and
    causal_conv1d's kernel on the fast path, else (and for the convolution when causal_conv1d is missing) our PyTorch
    ones in ``ops/ssd.py``, which take the same arguments."""
    from .ops.ssd import causal_conv1d, chunk_scan

    if kernel_path(device) == "fast":
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined as chunk_scan
        if _version("causal_conv1d"):
            from causal_conv1d import causal_conv1d_fn as causal_conv1d
    return chunk_scan, causal_conv1d


def add_norm(device: str):
    """The residual add + RMSNorm of packed Mamba layers: mamba_ssm's fused Triton kernel on the fast path, else our
    PyTorch one, which takes the same arguments (``modeling/packing.py``)."""
    from .ops.norm import add_norm_fused, add_norm_reference

    return add_norm_fused if kernel_path(device) == "fast" else add_norm_reference


def mamba1_ops(device: str):
    """(selective_scan, causal_conv1d, add_norm) for packed Mamba-1 rows (``modeling/packing.py``): mamba_ssm's CUDA
    scan and fused add + RMSNorm and causal_conv1d's kernel on the fast path, else (the convolution too when
    causal_conv1d is missing) our PyTorch ones, which take the same arguments."""
    from .ops.selective_scan import selective_scan
    from .ops.ssd import causal_conv1d

    if kernel_path(device) != "fast":
        return selective_scan, causal_conv1d, add_norm(device)
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    if _version("causal_conv1d"):
        from causal_conv1d import causal_conv1d_fn as causal_conv1d
    return selective_scan_fn, causal_conv1d, add_norm(device)


def mamba2_ops(device: str):
    """(split_conv1d_scan, add_norm) for packed Mamba-2 rows (``modeling/packing.py``): mamba_ssm's fused
    convolution + chunk scan + gated RMSNorm + out-projection on the fast path with causal_conv1d (in training and
    inference alike: transformers fuses in training only), else ``ops/ssd.py``'s, which takes the same arguments,
    over :func:`ssd_ops`' chunk scan and convolution."""
    from .ops.ssd import split_conv1d_scan

    if kernel_path(device) == "fast" and _version("causal_conv1d"):
        from mamba_ssm.ops.triton.ssd_combined import mamba_split_conv1d_scan_combined as split_conv1d_scan
        return split_conv1d_scan, add_norm(device)
    chunk_scan, conv = ssd_ops(device)
    return functools.partial(split_conv1d_scan, chunk_scan=chunk_scan, conv=conv), add_norm(device)


def cpu_mixer(device: str):
    """The compiled BiMamba-2 mixer for inference on CPUs (``ops/bimamba_cpu.py``), or None: elsewhere, when numba is
    missing, or when the environment sets ``MAMBA_PYSERINI_CPU_MIXER=0`` (then the mixer runs ``ops/ssd.py``'s
    chunk scan in each direction, as in training)."""
    if device != "cpu" or os.environ.get(CPU_MIXER_ENV) == "0" or not _version("numba"):
        return None
    from .ops.bimamba_cpu import bidirectional_mix

    return bidirectional_mix


def cuda_graphs(device: str) -> bool:
    """Whether packed Mamba-1 and Mamba-2 layers replay CUDA graphs (``modeling/cuda_graphs.py``): on the fast path,
    unless the environment sets ``MAMBA_PYSERINI_CUDA_GRAPHS=0``."""
    return kernel_path(device) == "fast" and os.environ.get(GRAPHS_ENV) != "0"


MAMBA_MODULES = ("transformers.models.mamba.modeling_mamba", "transformers.models.mamba2.modeling_mamba2")


def torch_function(fn, module: str):
    """The PyTorch function that ``fn``, one of ``module``'s kernel wrappers, falls back to, or None when ``fn`` is
    none. transformers wraps each (``functools.wraps``) to call mamba_ssm's or causal_conv1d's kernel when installed;
    from transformers 5.25 the ``kernels`` package (0.19) also makes each wrapper an ``nn.Module`` whose ``forward``
    calls it."""
    import torch

    if isinstance(fn, torch.nn.Module):
        fn = inspect.getclosurevars(type(fn).forward).nonlocals.get("func")
    if not callable(fn) or not hasattr(fn, "__wrapped__"):
        return None
    plain = inspect.unwrap(fn)
    return plain if getattr(plain, "__module__", None) == module else None


def _reference_overrides() -> dict[str, object]:
    """Our PyTorch replacements for transformers' reference functions, by name."""
    from .ops.selective_scan import selective_scan
    from .ops.ssd import causal_conv1d, chunk_scan

    return {"mamba_selective_scan": selective_scan, "mamba2_chunk_scan": chunk_scan, "causal_conv1d_fn": causal_conv1d}


def inference_bf16(device: str) -> bool:
    """Whether inference (scoring, encoding) runs under bf16 autocast: on CUDA GPUs, and on CPUs with native bf16
    matrix instructions (AVX512-BF16 or AMX), where the bundled BiMamba-2 models run ~1.7x faster than in fp32 and
    rank the same; never when the environment sets ``MAMBA_PYSERINI_FP32=1``."""
    import torch

    if os.environ.get(FP32_ENV) == "1":
        return False
    if device.startswith("cuda"):
        return True
    capabilities = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    return device == "cpu" and bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def provenance(device: str) -> dict:
    """What a run's numbers depend on, for its sidecar: the device, the kernel path (and whether BiMamba-2 mixers use
    the compiled CPU one), the inference precision and the versions of the packages that compute them."""
    packages = ("mamba_pyserini", "torch", "transformers", "pyserini", "mamba_ssm", "causal_conv1d", "numba")
    return {"device": device, "kernel": kernel_path(device), "cpu_mixer": cpu_mixer(device) is not None,
            "precision": "bf16" if inference_bf16(device) else "fp32", "versions": {p: _version(p) for p in packages}}


def inference_autocast(device: str):
    """The autocast context of inference on ``device`` (see :func:`inference_bf16`)."""
    import torch

    return torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=inference_bf16(device))


@contextlib.contextmanager
def accurate_fp32():
    """fp32 arithmetic at fp32 accuracy, for checks against reference results: no TF32 in PyTorch's matrix products
    and convolutions, and 3xTF32 in the Triton kernels compiled inside the block (mamba_ssm's Mamba-2 kernels leave
    ``tl.dot``'s precision to Triton, which defaults to TF32 for fp32 inputs; its "ieee" mode, without tensor cores,
    made autotuning them take over ten minutes on an H100). A kernel already compiled in this process for the same
    argument types keeps its precision, as Triton's in-memory cache key leaves the setting out."""
    import torch

    knobs = _version("triton") and getattr(importlib.import_module("triton"), "knobs", None)  # Triton >= 3.4
    language = knobs and knobs.language
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with language.scope() if language else contextlib.nullcontext():
            if language:
                language.fp32_default = "tf32x3"
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@contextlib.contextmanager
def kernels_for(device: str, unfused: bool = False):
    """Run transformers' Mamba layers on the path :func:`kernel_path` picks for ``device``.

    transformers binds mamba_ssm's CUDA functions at import when the package is installed, and would call them on
    CPU tensors too; off the fast path this swaps in the PyTorch reference functions they wrap (our own Mamba-1 scan
    in place of transformers' slow one), then restores. ``unfused`` keeps the fast kernels but not Mamba-1's fused
    training function, which reads the projection weights directly and so would bypass LoRA adapters on them.
    Without causal_conv1d, which Mamba-1's and Mamba-2's fused training functions need, both are off and our
    convolution serves, as transformers' own fallback ignores Mamba-2's segment ids (``seq_idx``)."""
    fast = kernel_path(device) == "fast"
    conv = bool(_version("causal_conv1d"))
    off = set() if conv else {"mamba2_split_conv1d_scan_combined"}  # fused training functions to leave out
    if unfused or not conv:
        off.add("mamba_inner_fn")
    overrides = {} if fast else _reference_overrides()
    if fast and not conv:
        overrides = {"causal_conv1d_fn": _reference_overrides()["causal_conv1d_fn"]}
    swapped = []
    for module in map(importlib.import_module, MAMBA_MODULES):
        for name, fn in list(vars(module).items()):
            plain = overrides.get(name) or ((not fast or name in off) and torch_function(fn, module.__name__))
            if plain:
                swapped.append((module, name, fn))
                setattr(module, name, plain)
    try:
        yield
    finally:
        for module, name, fn in swapped:
            setattr(module, name, fn)
