"""On a GPU with mamba_ssm and causal_conv1d (``pytest -m gpu tests/gpu``): every fused kernel the toolkit calls
agrees with its PyTorch twin in ``ops/`` (values and gradients, fp32 at fp32 accuracy), and whole tiny models score the
same packed as padded and replayed from CUDA graphs as run eagerly. Each test records its largest relative difference
(``max |a - b| / max |b|``) as a junit property; the committed results are in ``tests/gpu/results/``."""
from __future__ import annotations

import pytest
import torch

from mamba_pyserini._kernels import GRAPHS_ENV, _version, accurate_fp32

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available() or not _version("mamba_ssm")
                                                  or not _version("causal_conv1d"),
                                                  reason="needs a CUDA GPU with mamba_ssm and causal_conv1d")]
FP32 = 1e-4  # the bench's fp32 target for packed vs padded scores


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


def compare(fused, reference, inputs: dict, record_property) -> None:
    """Run both on fresh leaf copies of ``inputs`` (tensors that require grad get gradients) and compare the outputs
    and the gradients of a fixed random projection of them."""
    results = []
    for fn in (fused, reference):
        leaves = {k: v.detach().clone().requires_grad_(v.requires_grad) if torch.is_tensor(v) else v
                  for k, v in inputs.items()}
        with accurate_fp32():
            out = fn(**leaves)
            out = out[0] if isinstance(out, tuple) else out
            torch.manual_seed(1)
            (out * torch.randn(out.shape, device=out.device)).sum().backward()  # not randn_like: strides differ
        grads_of = {k: v.grad for k, v in leaves.items() if torch.is_tensor(v) and v.grad is not None}
        results.append((out.detach(), grads_of))
    (out_f, grad_f), (out_r, grad_r) = results
    diffs = {"out": rel(out_f, out_r), **{f"d{k}": rel(grad_f[k], grad_r[k]) for k in grad_r}}
    for name, value in diffs.items():
        record_property(name, value)
    assert set(grad_f) == set(grad_r)
    assert max(diffs.values()) < FP32, diffs


def tensor(*shape, grad=True, scale=1.0, shift=0.0):
    return (torch.randn(*shape, device="cuda") * scale + shift).requires_grad_(grad)


def test_selective_scan(record_property):
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    from mamba_pyserini.ops.selective_scan import selective_scan

    torch.manual_seed(0)
    b, d, n, length = 2, 64, 16, 300
    inputs = dict(u=tensor(b, d, length), delta=tensor(b, d, length, scale=0.5, shift=-3), A=-tensor(d, n).abs(),
                  B=tensor(b, n, length), C=tensor(b, n, length), D=tensor(d), z=tensor(b, d, length),
                  delta_bias=tensor(d, scale=0.1), delta_softplus=True)

    def reference(u, delta, A, B, C, **kw):
        return selective_scan(u, delta, A, B, C, **kw)

    def fused(u, delta, A, B, C, **kw):
        return selective_scan_fn(u, delta, A, B, C, **kw)

    compare(fused, reference, inputs, record_property)


@pytest.mark.parametrize("segments", [False, True], ids=["one-sequence", "packed-seq-idx"])
def test_chunk_scan(segments, record_property):
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    from mamba_pyserini.ops.ssd import chunk_scan

    torch.manual_seed(0)
    b, length, h, p, g, n = 2, 256, 4, 16, 1, 16
    inputs = dict(x=tensor(b, length, h, p), dt=tensor(b, length, h, scale=0.5, shift=-2), A=-tensor(h).abs(),
                  B=tensor(b, length, g, n), C=tensor(b, length, g, n), chunk_size=64, D=tensor(h),
                  dt_bias=tensor(h, scale=0.1), dt_softplus=True)
    if segments:  # three segments per row, restarting mid-chunk
        inputs["seq_idx"] = (torch.arange(length, device="cuda") // 90).to(torch.int32).expand(b, length).contiguous()

    def reference(x, **kw):
        return chunk_scan(x, **kw)

    def fused(x, dt, A, B, C, chunk_size, **kw):
        return mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, **kw)

    compare(fused, reference, inputs, record_property)


@pytest.mark.parametrize("segments", [False, True], ids=["one-sequence", "packed-seq-idx"])
def test_causal_conv1d(segments, record_property):
    from causal_conv1d import causal_conv1d_fn

    from mamba_pyserini.ops.ssd import causal_conv1d

    torch.manual_seed(0)
    b, d, length = 2, 64, 200
    x = tensor(b, length, d).transpose(1, 2) if segments else tensor(b, d, length)  # seq_idx needs channels last
    inputs = dict(x=x.detach(), weight=tensor(d, 4), bias=tensor(d), activation="silu")
    inputs["x"].requires_grad_()
    if segments:
        inputs["seq_idx"] = (torch.arange(length, device="cuda") // 70).to(torch.int32).expand(b, length).contiguous()

    def reference(x, **kw):
        return causal_conv1d(x, **kw)

    def fused(x, weight, bias, activation, seq_idx=None):
        x = x.transpose(1, 2).contiguous().transpose(1, 2) if seq_idx is not None else x
        return causal_conv1d_fn(x, weight, bias, seq_idx=seq_idx, activation=activation)

    compare(fused, reference, inputs, record_property)


def test_add_norm(record_property):
    from mamba_pyserini.ops.norm import add_norm_fused, add_norm_reference

    class RMSNorm(torch.nn.Module):  # transformers' MambaRMSNorm
        def __init__(self, d):
            super().__init__()
            self.weight, self.variance_epsilon = torch.nn.Parameter(torch.randn(d, device="cuda")), 1e-5

        def forward(self, x):
            x32 = x.float()
            return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    torch.manual_seed(0)
    norm = RMSNorm(64)
    inputs = dict(hidden=tensor(3, 50, 64), residual=tensor(3, 50, 64), norm=norm, residual_in_fp32=True)

    def both(fn):
        def run(**kw):
            normed, residual = fn(**kw)
            return torch.cat([normed, residual], -1)
        return run

    compare(both(add_norm_fused), both(add_norm_reference), inputs, record_property)


def test_split_conv1d_scan(record_property):
    from mamba_ssm.ops.triton.ssd_combined import mamba_split_conv1d_scan_combined

    from mamba_pyserini.ops.ssd import split_conv1d_scan

    torch.manual_seed(0)
    b, length, d_model, h, p, g, n = 2, 200, 64, 8, 16, 1, 16
    d_inner = h * p
    conv_dim = d_inner + 2 * g * n
    inputs = dict(zxbcdt=tensor(b, length, 2 * d_inner + 2 * g * n + h), conv1d_weight=tensor(conv_dim, 4, scale=0.5),
                  conv1d_bias=tensor(conv_dim, scale=0.1), dt_bias=tensor(h, scale=0.1, shift=-2),
                  A=-tensor(h).abs(), D=tensor(h), chunk_size=64,
                  seq_idx=(torch.arange(length, device="cuda") // 70).to(torch.int32).expand(b, length).contiguous(),
                  activation="silu", rmsnorm_weight=tensor(d_inner), rmsnorm_eps=1e-5,
                  outproj_weight=tensor(d_model, d_inner, scale=d_inner ** -0.5), headdim=p, ngroups=g,
                  norm_before_gate=False)
    compare(mamba_split_conv1d_scan_combined, split_conv1d_scan, inputs, record_property)


@pytest.mark.parametrize("family", ["mamba", "mamba2"])
def test_tiny_models_score_alike_packed_padded_graphed_and_eager(family, neox_tokenizer, monkeypatch,
                                                                 record_property):
    """fp32 scores of a tiny random Mamba cross-encoder on DL19-like pairs: padded (transformers' layers), packed
    eager and packed from CUDA graphs (the toolkit's layer loop over the fused kernels)."""
    from conftest import make_cross_encoder

    monkeypatch.setenv("MAMBA_PYSERINI_FP32", "1")
    model = make_cross_encoder(family, neox_tokenizer, max_length=128).cuda()
    pairs = [(f"query {i} about fleas", "passage text " * (3 + 7 * i % 40)) for i in range(48)]
    scores = {}
    for name, packing, graphs in [("padded", False, "0"), ("packed", True, "0"), ("graphed", True, "1")]:
        monkeypatch.setenv(GRAPHS_ENV, graphs)
        model.packing = packing
        with accurate_fp32():
            scores[name] = torch.from_numpy(model.predict(pairs, batch_size=16, device="cuda"))
    diffs = {"packed_vs_padded": rel(scores["packed"], scores["padded"]),
             "graphed_vs_eager": rel(scores["graphed"], scores["packed"])}
    for name, value in diffs.items():
        record_property(name, value)
    assert max(diffs.values()) < FP32, diffs
