import importlib
import types

import numpy as np
import pytest
import torch

from mamba_pyserini import kernel_info
from mamba_pyserini._kernels import (
    FP32_ENV,
    MAMBA_MODULES,
    _version,
    accurate_fp32,
    inference_bf16,
    kernel_path,
    kernels_for,
    torch_function,
)


def test_cpu_runs_the_reference_functions_and_restores_the_bound_ones():
    modules = [importlib.import_module(m) for m in MAMBA_MODULES]
    before = [dict(vars(m)) for m in modules]
    wrapped = [(m, n) for m, b in zip(modules, before) for n, f in b.items() if torch_function(f, m.__name__)]
    assert {"mamba_selective_scan", "mamba_inner_fn", "mamba2_split_conv1d_scan_combined"} <= {n for _, n in wrapped}
    with kernels_for("cpu"):
        for module, name in wrapped:
            fn = getattr(module, name)
            assert isinstance(fn, types.FunctionType) and not hasattr(fn, "__wrapped__")  # a plain PyTorch function
            assert torch_function(fn, module.__name__) is None
    assert all(vars(m)[n] is b[n] for m, b in zip(modules, before) for n in b if (m, n) in wrapped)


def test_accurate_fp32_sets_fp32_precision_inside_and_restores_it():
    knobs = importlib.import_module("triton").knobs.language if _version("triton") else None
    saved = torch.backends.cudnn.allow_tf32, knobs and knobs.fp32_default
    torch.backends.cudnn.allow_tf32 = True
    try:
        with accurate_fp32():
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
            assert knobs is None or knobs.fp32_default == "tf32x3"
        assert torch.backends.cudnn.allow_tf32 and (knobs is None or knobs.fp32_default == saved[1])
    finally:
        torch.backends.cudnn.allow_tf32 = saved[0]


def test_kernel_path_is_ref_without_cuda_kernels():
    info = kernel_info()
    assert set(info) == {"mamba_ssm", "causal_conv1d", "cuda", "torch"}
    assert kernel_path("cpu") == "ref"
    if info["mamba_ssm"] is None:
        assert kernel_path("cuda") == "ref"


def test_our_cpu_scan_matches_transformers_reference_in_values_and_gradients():
    import torch
    import transformers.models.mamba.modeling_mamba as modeling_mamba

    from mamba_pyserini.ops.selective_scan import selective_scan

    reference = torch_function(modeling_mamba.mamba_selective_scan, modeling_mamba.__name__)
    b, d, n, length = 2, 16, 4, 40

    def run(fn):
        g = torch.Generator().manual_seed(0)
        u, dt, z = (torch.randn(b, d, length, generator=g, requires_grad=True) for _ in range(3))
        A = (-torch.rand(d, n, generator=g)).requires_grad_()
        B, C = (torch.randn(b, n, length, generator=g, requires_grad=True) for _ in range(2))
        D, bias = (torch.randn(d, generator=g, requires_grad=True) for _ in range(2))
        out, last = fn(u, dt, A, B, C, D=D, z=z, delta_bias=bias, delta_softplus=True, return_last_state=True)
        (out.square().sum() + last.sum()).backward()
        return [out, last] + [t.grad for t in (u, dt, z, A, B, C, D, bias)]

    for ours, theirs in zip(run(selective_scan), run(reference)):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_cpu_kernel_path_uses_our_scan_inside_a_mamba_model():
    import torch
    import transformers.models.mamba.modeling_mamba as modeling_mamba
    from transformers import MambaConfig, MambaModel

    from mamba_pyserini.ops.selective_scan import selective_scan

    torch.manual_seed(0)
    model = MambaModel(MambaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, state_size=4)).eval()
    ids = torch.randint(0, 50, (2, 12))
    with kernels_for("cpu"):
        assert modeling_mamba.mamba_selective_scan is selective_scan
        ours = model(ids).last_hidden_state
    assert modeling_mamba.mamba_selective_scan is not selective_scan  # restored: transformers' own scan again
    torch.testing.assert_close(ours, model(ids).last_hidden_state, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("length, groups, initial", [(50, 1, False), (64, 2, True), (7, 1, True)])
def test_our_mamba2_chunk_scan_matches_transformers_reference_in_values_and_gradients(length, groups, initial):
    import torch
    import transformers.models.mamba2.modeling_mamba2 as modeling_mamba2

    from mamba_pyserini.ops.ssd import chunk_scan

    reference = torch_function(modeling_mamba2.mamba2_chunk_scan, modeling_mamba2.__name__)
    b, h, p, n = 2, 4, 8, 6

    def run(fn):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(b, length, h, p, generator=g, requires_grad=True)
        dt = torch.randn(b, length, h, generator=g, requires_grad=True)
        A = (-3 * torch.rand(h, generator=g)).requires_grad_()
        B, C = (torch.randn(b, length, groups, n, generator=g, requires_grad=True) for _ in range(2))
        D, bias = (torch.randn(h, generator=g, requires_grad=True) for _ in range(2))
        state = torch.randn(b, h, p, n, generator=g, requires_grad=True) if initial else None
        out, last = fn(x, dt, A, B, C, 16, D=D, dt_bias=bias, initial_states=state, dt_softplus=True,
                       return_final_states=True)
        (out.square().sum() + last.sum()).backward()
        return [out, last] + [t.grad for t in (x, dt, A, B, C, D, bias) + ((state,) if initial else ())]

    for ours, theirs in zip(run(chunk_scan), run(reference)):
        torch.testing.assert_close(ours, theirs, rtol=2e-3, atol=2e-3)  # fp32 sums in another order


def test_cpu_kernel_path_uses_our_chunk_scan_inside_a_mamba2_model():
    import torch
    import transformers.models.mamba2.modeling_mamba2 as modeling_mamba2
    from transformers import Mamba2Config, Mamba2Model

    from mamba_pyserini.ops.ssd import chunk_scan

    torch.manual_seed(0)
    config = Mamba2Config(vocab_size=50, hidden_size=32, num_hidden_layers=2, state_size=8, expand=2, head_dim=16,
                          num_heads=4, n_groups=1, chunk_size=8)
    model = Mamba2Model(config).eval()
    ids = torch.randint(0, 50, (2, 21))
    with kernels_for("cpu"):
        assert modeling_mamba2.mamba2_chunk_scan is chunk_scan
        ours = model(ids).last_hidden_state
    assert modeling_mamba2.mamba2_chunk_scan is not chunk_scan
    torch.testing.assert_close(ours, model(ids).last_hidden_state, rtol=1e-4, atol=1e-5)


def _packed(lengths, *shape, generator):
    import torch

    return torch.randn(1, sum(lengths), *shape, generator=generator)


@pytest.mark.parametrize("lengths", [[5, 9, 3], [16, 16], [1, 20, 7, 2]])
def test_a_packed_row_scans_each_sequence_as_if_alone(lengths):
    """seq_idx keeps packed sequences apart in our chunk scan and causal conv, as in mamba_ssm's kernels."""
    import torch

    from mamba_pyserini.ops.ssd import causal_conv1d, chunk_scan

    g = torch.Generator().manual_seed(0)
    h, p, n, d = 2, 4, 3, 6
    x, dt = _packed(lengths, h, p, generator=g), _packed(lengths, h, generator=g)
    B, C = _packed(lengths, 1, n, generator=g), _packed(lengths, 1, n, generator=g)
    conv_in = _packed(lengths, d, generator=g).transpose(1, 2)
    weight, bias = torch.randn(d, 4, generator=g), torch.randn(d, generator=g)
    A, D = -torch.rand(h, generator=g), torch.randn(h, generator=g)
    seq_idx = torch.cat([torch.full((n_,), i) for i, n_ in enumerate(lengths)])[None].int()
    packed, _ = chunk_scan(x, dt, A, B, C, 8, D=D, dt_softplus=True, seq_idx=seq_idx, return_final_states=True)
    conv = causal_conv1d(conv_in, weight, bias, "silu", seq_idx=seq_idx)
    start = 0
    for length in lengths:
        part = slice(start, start + length)
        alone = chunk_scan(x[:, part], dt[:, part], A, B[:, part], C[:, part], 8, D=D, dt_softplus=True)
        torch.testing.assert_close(packed[:, part], alone, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(conv[..., part], causal_conv1d(conv_in[..., part], weight, bias, "silu"))
        start += length


def test_a_packed_mamba2_model_on_the_fallback_path_matches_separate_sequences():
    import torch
    from transformers import Mamba2Config, Mamba2Model

    torch.manual_seed(0)
    config = Mamba2Config(vocab_size=50, hidden_size=32, num_hidden_layers=2, state_size=8, expand=2, head_dim=16,
                          num_heads=4, n_groups=1, chunk_size=8)
    model = Mamba2Model(config).eval()
    parts = [torch.randint(0, 50, (1, n)) for n in (6, 13, 4)]
    seq_idx = torch.cat([torch.full((p.shape[1],), i) for i, p in enumerate(parts)])[None].int()
    with kernels_for("cpu"), torch.no_grad():
        packed = model(torch.cat(parts, dim=1), seq_idx=seq_idx).last_hidden_state
        alone = torch.cat([model(p).last_hidden_state for p in parts], dim=1)
    torch.testing.assert_close(packed, alone, rtol=1e-4, atol=1e-5)


def test_bf16_inference_runs_where_the_cpu_has_native_bf16_and_ranks_as_fp32_does(monkeypatch):
    import gzip
    import json

    from mamba_pyserini.candidates import CANDIDATES_DIR
    from mamba_pyserini.modeling.auto import load_model

    monkeypatch.delenv(FP32_ENV, raising=False)
    capabilities = torch.cpu.get_capabilities()
    native = bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
    assert inference_bf16("cpu") == native and inference_bf16("cuda:1")
    if not native:
        pytest.skip("this CPU has no native bf16: inference stays in fp32")
    entry = json.load(gzip.open(CANDIDATES_DIR / "bm25.dl19-passage.json.gz", "rt"))[0]
    pairs = [(entry["query"], hit["content"]) for hit in entry["hits"][:40]]
    model = load_model("default")
    bf16 = model.predict(pairs)
    monkeypatch.setenv(FP32_ENV, "1")
    assert not inference_bf16("cpu") and not inference_bf16("cuda")
    fp32 = model.predict(pairs)
    assert not np.array_equal(bf16, fp32)  # the two paths differ ...
    np.testing.assert_allclose(bf16, fp32, atol=0.02)  # ... by bf16 rounding
    assert np.corrcoef(np.argsort(np.argsort(bf16)), np.argsort(np.argsort(fp32)))[0, 1] > 0.95
