"""The fused kernels' PyTorch twins (selective scan, SSD chunk scan and convolution, residual add + RMSNorm): torch
only, each taking the same arguments as the mamba_ssm / causal_conv1d function it stands in for; ``_kernels`` picks
between them."""
