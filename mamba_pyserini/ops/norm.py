"""Residual add + RMSNorm of a Mamba block: the PyTorch reference and mamba_ssm's fused Triton kernel, which take the
same arguments."""
from __future__ import annotations


def add_norm_reference(hidden, residual, norm, residual_in_fp32: bool):
    """(normed, residual): transformers' ``MambaBlock`` residual add then RMSNorm, as mamba_ssm's fused
    ``rms_norm_fn(..., prenorm=True)`` computes them."""
    residual = hidden if residual is None else residual + hidden
    residual = residual.float() if residual_in_fp32 else residual
    return norm(residual.to(norm.weight.dtype)), residual


def add_norm_fused(hidden, residual, norm, residual_in_fp32: bool):
    """mamba_ssm's fused residual add + RMSNorm (Triton)."""
    from mamba_ssm.ops.triton.layer_norm import rms_norm_fn

    return rms_norm_fn(hidden, norm.weight, None, residual=residual, prenorm=True, residual_in_fp32=residual_in_fp32,
                       eps=norm.variance_epsilon)
