import importlib

from mamba_pyserini import kernel_info
from mamba_pyserini._kernels import MAMBA_MODULES, kernel_path, kernels_for


def test_cpu_runs_the_reference_functions_and_restores_the_bound_ones():
    modules = [importlib.import_module(m) for m in MAMBA_MODULES]
    before = [dict(vars(m)) for m in modules]
    wrapped = [(m, n) for m, b in zip(modules, before) for n, f in b.items() if hasattr(f, "__wrapped__")
               and getattr(f, "__module__", None) == m.__name__]
    assert any(n == "mamba_selective_scan" for _, n in wrapped)
    with kernels_for("cpu"):
        for module, name in wrapped:
            assert not hasattr(getattr(module, name), "__wrapped__")  # the plain PyTorch function
    assert all(vars(m)[n] is b[n] for m, b in zip(modules, before) for n in b if (m, n) in wrapped)


def test_kernel_path_is_ref_without_cuda_kernels():
    info = kernel_info()
    assert set(info) == {"mamba_ssm", "causal_conv1d", "cuda", "torch"}
    assert kernel_path("cpu") == "ref"
    if info["mamba_ssm"] is None:
        assert kernel_path("cuda") == "ref"
