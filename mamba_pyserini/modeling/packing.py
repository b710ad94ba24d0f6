"""Packed batches: a batch's sequences laid end to end in rows (see :func:`layout`), so little work is spent on
padding and a step has one of a few shapes.

Mamba-1 (transformers ``MambaModel``) runs packed here with its own weights, channels first as mamba_ssm's kernels
want them: separator tokens before each sequence zero the convolution's inputs and reset the selective scan's
state with a decay of exactly zero (see :func:`_mixer`); Mamba-2 (``Mamba2Model``) runs each mixer as one fused call
(:func:`_mamba2_mixer`) given each token's segment id (``seq_idx``), at which its convolution and chunk scan restart;
attention models run packed through torch's variable-length flash attention (``varlen_attn``), registered with
transformers as the ``varlen`` attention implementation. Outputs are scattered back to the right-padded (B, L, D)
layout, so pooling and heads do not change."""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
import torch.nn.functional as F

VARLEN = "varlen"  # transformers attention implementation name of torch's varlen flash attention
ROW_LENGTH = 1024  # tokens per packed row of Mamba-1 and attention models on GPUs: few distinct shapes (rows x 1024)
MAMBA_TYPES = ("mamba", "mamba2")  # transformers model types of the Mamba backbones that pack (Mamba-1, Mamba-2)
RESET_STEP = 2.0**24  # the scan's step at a separator: exp(step * A) is exactly 0 for any |A| > 1e-5


@dataclass
class Packing:
    """Where each sequence of a batch lies in its packed rows (R, T). ``position_ids`` (R, T): each token's position
    in its sequence (0 elsewhere); ``separators`` (R, 1, T): the separator tokens (see :func:`pack`), broadcast over
    channels.
    ``cu_seqlens`` (N + 1,) int32 and ``max_seqlen``: flash attention's segment boundaries in the flattened rows
    (each sequence, each run of separators and the padding at a row's end is a segment); ``seq_idx`` (R, T) int32:
    each token's segment, as Mamba-2's kernels take it. ``source``, ``index`` (n,): each real token's place in the
    flattened rows and in the flattened right-padded batch of ``shape`` (B, L)."""

    position_ids: torch.Tensor
    separators: torch.Tensor
    cu_seqlens: torch.Tensor
    seq_idx: torch.Tensor
    source: torch.Tensor
    index: torch.Tensor
    max_seqlen: int
    shape: tuple[int, int]

    def to(self, device, non_blocking: bool = False) -> "Packing":
        return replace(self, **{f.name: to_device(getattr(self, f.name), device, non_blocking)
                                for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)})

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """(R, T, ...) values of the packed rows -> (B, L, ...) of the right-padded batch, zeros at the pads."""
        values = packed.flatten(0, 1)[self.source]
        out = values.new_zeros(self.shape[0] * self.shape[1], *values.shape[1:])
        return out.index_copy(0, self.index, values).view(*self.shape, *values.shape[1:])


def to_device(tensor: torch.Tensor, device, non_blocking: bool = False) -> torch.Tensor:
    """``tensor`` on ``device``; with ``non_blocking``, a CPU tensor goes to a GPU from pinned memory, so that the copy
    does not wait for the GPU's queued work."""
    if non_blocking and torch.device(device).type == "cuda" and tensor.device.type == "cpu":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=non_blocking)


def pack(features: list[dict[str, list[int]]], pad_id: int, row_length: int | None = None,
         separators: int = 0, multiple_of: int = 1) -> dict:
    """``features`` laid end to end, in order, in rows of ``input_ids`` (and ``token_type_ids``) (R, T), a new row
    starting where the next sequence would not fit. T is ``row_length`` (or the longest sequence, if longer); without
    ``row_length`` everything goes in one row of the batch's tokens, rounded up to a multiple of ``multiple_of``.
    ``separators`` pad tokens precede every sequence that does not begin its row (Mamba-1 needs
    :func:`separator_tokens`). Returns those, the (B, L) ``attention_mask`` of the right-padded batch and the
    :class:`Packing`."""
    lengths = np.array([len(f["input_ids"]) for f in features])
    width = int(lengths.max())
    row = max(row_length or -(-(int(lengths.sum()) + separators * (len(features) - 1)) // multiple_of) * multiple_of,
              width)
    starts, leads, segments = np.empty(len(features), dtype=np.int64), np.zeros(len(features), dtype=bool), []
    rows, filled = 0, row
    for i, n in enumerate(lengths.tolist()):  # greedy, in order: a new row where the next sequence would not fit
        if filled + separators * bool(filled) + n > row:
            segments.append(row - filled)  # the previous row's padding
            rows, filled, leads[i] = rows + 1, 0, True
        elif separators:
            segments.append(separators)
            filled += separators
        starts[i] = (rows - 1) * row + filled
        segments.append(n)
        filled += n
    segments = [n for n in segments[1:] + [row - filled] if n]
    offsets = np.cumsum(lengths) - lengths  # each sequence's first token in the concatenated features
    within = np.arange(lengths.sum()) - np.repeat(offsets, lengths)  # each token's position in its sequence
    source = np.repeat(starts, lengths) + within
    batch = {}
    for key in features[0]:
        flat = np.full(rows * row, pad_id if key == "input_ids" else 0, dtype=np.int64)
        flat[source] = np.concatenate([f[key] for f in features])
        batch[key] = torch.from_numpy(flat).view(rows, row)
    position_ids = np.zeros(rows * row, dtype=np.int64)
    position_ids[source] = within  # separators and padding stay at 0
    marks = np.zeros(rows * row, dtype=bool)
    marks[np.repeat(starts[~leads] - separators, separators) + np.tile(np.arange(separators), (~leads).sum())] = True
    index = np.repeat(np.arange(len(features)) * width, lengths) + within
    mask = torch.from_numpy(np.arange(width)[None, :] < lengths[:, None]).long()  # (B, L)
    packing = Packing(position_ids=torch.from_numpy(position_ids).view(rows, row),
                      separators=torch.from_numpy(marks).view(rows, 1, row),
                      cu_seqlens=F.pad(torch.tensor(segments).cumsum(0), (1, 0)).to(torch.int32),
                      seq_idx=torch.from_numpy(np.repeat(np.arange(len(segments), dtype=np.int32), segments)).view(
                          rows, row),
                      source=torch.from_numpy(source), index=torch.from_numpy(index), max_seqlen=max(segments),
                      shape=(len(features), width))
    return {**batch, "attention_mask": mask, "packing": packing}


def layout(config, on_gpu: bool) -> dict:
    """:func:`pack`'s layout arguments for a backbone with this transformers config: its :func:`separator_tokens`
    and, on GPUs, its rows. Mamba-2 goes in one row of whole scan chunks, whose chunks its kernels run in parallel
    (the least padding: 1.5% of the bench's training tokens, against 13% in rows of 1,024); Mamba-1, whose scan runs
    rows x channels in parallel (1.8x slower per token in one row), and attention models in rows of
    :data:`ROW_LENGTH`. Elsewhere (CPUs) one row of exactly the batch's tokens."""
    rows = {}
    if on_gpu:
        rows = {"multiple_of": config.chunk_size} if config.model_type == "mamba2" else {"row_length": ROW_LENGTH}
    return {"separators": separator_tokens(config), **rows}


def separator_tokens(config) -> int:
    """Separators before each packed sequence (see :func:`pack`): Mamba-1 needs as many as its convolution looks back
    (``conv_kernel - 1``: their inputs are zeroed, as the padding before an unpacked sequence); attention none."""
    return config.conv_kernel - 1 if config.model_type == "mamba" else 0


def can_pack(config, device: str) -> bool:
    """Whether a backbone with this transformers config can run packed rows on ``device``: Mamba-1 and Mamba-2
    anywhere, an attention model whose attention implementation is :data:`VARLEN` on GPUs (flash attention)."""
    if config.model_type in MAMBA_TYPES:
        return True
    return device.startswith("cuda") and getattr(config, "_attn_implementation", None) == VARLEN


def packs(device: str, config) -> bool:
    """Whether batches for a backbone with this config run packed on ``device``: Mamba-1 and Mamba-2 on the fast path
    (``_kernels.kernel_path``), where packing removes the padding; attention models set to the ``varlen``
    implementation, on GPUs. Elsewhere right-padded batches are faster (the CPU scans step through every position)."""
    from .._kernels import kernel_path

    return can_pack(config, device) and (config.model_type not in MAMBA_TYPES or kernel_path(device) == "fast")


def packed_hidden(backbone, input_ids, token_type_ids, packing: Packing) -> torch.Tensor:
    """Last hidden states (R, T, D) of packed rows."""
    config = backbone.config
    if config.model_type in MAMBA_TYPES:
        base = backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone  # under LoRA
        return (mamba_packed if config.model_type == "mamba" else mamba2_packed)(base, input_ids, packing)
    if getattr(config, "_attn_implementation", None) == VARLEN:
        register_varlen_attention()
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        return backbone(input_ids=input_ids, position_ids=packing.position_ids, cu_seq_lens_q=packing.cu_seqlens,
                        cu_seq_lens_k=packing.cu_seqlens, max_length_q=packing.max_seqlen,
                        max_length_k=packing.max_seqlen, use_cache=False, **extra).last_hidden_state
    raise ValueError(f"a {config.model_type} backbone cannot run packed rows")


# -- Mamba-1 -------------------------------------------------------------------------------------------------------
def mamba_packed(model, input_ids, packing: Packing) -> torch.Tensor:
    """transformers ``MambaModel``'s forward over packed rows, on the path ``_kernels.mamba1_ops`` picks (mamba_ssm's
    selective scan, causal_conv1d and fused add + RMSNorm on the fast path; PyTorch otherwise), its layers replayed
    from a CUDA graph where ``_kernels.cuda_graphs`` says (``modeling/cuda_graphs.py``)."""
    from .._kernels import mamba1_ops

    layers = functools.partial(mamba_layers, model.layers, model.norm_f, mamba1_ops(input_ids.device.type))
    return _run_layers(model, layers, (model.embeddings(input_ids), packing.separators))


def _run_layers(model, layers, args: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """``layers(*args)``: a Mamba model's layer stack (a function of the layers, not of the model, so that the
    model's graph cache does not keep it alive), replayed from a CUDA graph where ``_kernels.cuda_graphs`` says."""
    from .._kernels import cuda_graphs
    from .cuda_graphs import graphed

    if cuda_graphs(args[0].device.type):
        return graphed(model, layers, [model.layers, model.norm_f], args)
    return layers(*args)


def mamba_layers(layers, norm_f, ops, hidden, separators) -> torch.Tensor:
    """``MambaModel``'s ``layers`` and final norm over packed rows of embeddings (R, T, D), with ``ops`` =
    (selective_scan, causal_conv1d, add_norm)."""
    scan, conv, add_norm = ops
    residual = None
    for block in layers:
        hidden, residual = add_norm(hidden, residual, block.norm, block.residual_in_fp32)
        hidden = _mixer(block.mixer, hidden, separators, scan, conv)
    return add_norm(hidden, residual, norm_f, layers[-1].residual_in_fp32)[0]


def _mixer(mixer, hidden, separators, scan, conv) -> torch.Tensor:
    """One ``MambaMixer`` over packed rows (R, T, D) -> (R, T, D), channels first inside (R, C, T), as the kernels want
    them, so that nothing is transposed in memory. ``separators`` (R, 1, T): the convolution's inputs there are zero,
    as the padding before an unpacked sequence; the scan's step there is :data:`RESET_STEP` and its input matrix B
    zero, so the decay, exp(step * A), underflows to exactly 0 and nothing is written: the state entering the next
    sequence is zero, as in an unpacked run (in the gradients too: nothing flows through a separator). The
    convolution's inputs are zeroed before the input projection, on half as many channels, unless it has a bias; the
    step is set inside its projection (:func:`_step`)."""
    di, rank, n = mixer.intermediate_size, mixer.time_step_rank, mixer.ssm_state_size
    xz = _project(mixer.in_proj, torch.where(separators.transpose(1, 2), 0.0, hidden).transpose(1, 2))
    if mixer.in_proj.bias is not None:
        xz = torch.where(separators, 0.0, xz)
    x, z = xz.split(di, dim=1)  # (R, di, T) each
    x = conv(x, mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias, activation=mixer.activation)
    dt, B, C = _project(mixer.x_proj, x).split([rank, n, n], dim=1)
    y = scan(x, _step(mixer.dt_proj.weight, dt, separators), -torch.exp(mixer.A_log.float()),
             torch.where(separators, 0.0, B), C, D=mixer.D.float(), z=z, delta_bias=mixer.dt_proj.bias.float(),
             delta_softplus=True)
    return _project(mixer.out_proj, y, channels_last=True)


def _step(weight, dt, separators) -> torch.Tensor:
    """The scan's step before its bias (the scan adds it): ``weight`` (di, rank) over ``dt`` (R, rank, T), and
    :data:`RESET_STEP` at the separators, in one matmul: the separators are an extra input row whose weight is
    ``RESET_STEP`` (with 7 zero rows, so that the matmul's inner size stays a multiple of 8)."""
    marks = F.pad(separators.to(dt.dtype), (0, 0, 0, 7))  # (R, 8, T)
    reset = F.pad(weight.new_full((weight.shape[0], 1), RESET_STEP), (0, 7))  # (di, 8)
    return _matmul(torch.cat([weight, reset], 1), torch.cat([dt, marks], 1))


def _project(linear, x, channels_last: bool = False) -> torch.Tensor:
    """``linear`` over the channels of ``x`` (R, C_in, T) -> (R, C_out, T), or (R, T, C_out) with ``channels_last``:
    a plain ``nn.Linear`` through :func:`_matmul`, other modules (LoRA) through their forward on a transposed view."""
    if type(linear) is not torch.nn.Linear:
        out = linear(x.transpose(1, 2))
        return out if channels_last else out.transpose(1, 2)
    out = _matmul(linear.weight, x, channels_last)
    if linear.bias is None:
        return out
    return out + linear.bias.to(out.dtype)[(None, None) if channels_last else (slice(None), None)]


def _matmul(weight, x, channels_last: bool = False) -> torch.Tensor:
    """``weight`` (C_out, C_in) times each row of ``x`` (R, C_in, T) as it lies in memory (channels first, or last as a
    transposed view), the weight cast once to the autocast dtype: (R, C_out, T), or (R, T, C_out) with
    ``channels_last``. No transposed copies, in the backward either (:class:`_Matmul`)."""
    if torch.is_autocast_enabled(x.device.type):
        weight = weight.to(torch.get_autocast_dtype(x.device.type))
        x = x.to(weight.dtype)
    return _Matmul.apply(weight, x, channels_last)


def _bmm(a, b) -> torch.Tensor:
    """``a`` (R, M, K) times ``b`` (R, K, N), either of them 2-D for the same matrix in every row."""
    if a.dim() == 2:
        a = a.expand(b.shape[0], *a.shape)
    if b.dim() == 2:
        b = b.expand(a.shape[0], *b.shape)
    return torch.bmm(a, b)


class _Matmul(torch.autograd.Function):
    """:func:`_matmul`, whose input gradient has the input's own memory layout (autograd's would be a transposed
    view of the other layout, which mamba_ssm's kernels and RMSNorm copy before use)."""

    @staticmethod
    def forward(ctx, weight, x, channels_last):
        ctx.save_for_backward(weight, x)
        ctx.channels_last = channels_last
        return _bmm(x.transpose(1, 2), weight.t()) if channels_last else _bmm(weight, x)

    @staticmethod
    def backward(ctx, grad):
        weight, x = ctx.saved_tensors
        grad = grad.transpose(1, 2) if ctx.channels_last else grad  # (R, C_out, T)
        if x.stride(1) == 1 and x.stride(2) != 1:  # x: a transposed view of (R, T, C_in)
            dx = _bmm(grad.transpose(1, 2), weight).transpose(1, 2)
        else:
            dx = _bmm(weight.t(), grad)
        return _bmm(grad, x.transpose(1, 2)).sum(0), dx, None


# -- Mamba-2 -------------------------------------------------------------------------------------------------------
def mamba2_packed(model, input_ids, packing: Packing) -> torch.Tensor:
    """transformers ``Mamba2Model``'s forward over packed rows, on the path ``_kernels.mamba2_ops`` picks (mamba_ssm's
    fused mixer and add + RMSNorm on the fast path; ``ops/ssd.py`` otherwise), each mixer given each token's
    segment (``seq_idx``), at which its convolution and chunk scan restart; replayed from a CUDA graph where
    ``_kernels.cuda_graphs`` says."""
    from .._kernels import mamba2_ops

    layers = functools.partial(mamba2_layers, model.layers, model.norm_f, mamba2_ops(input_ids.device.type))
    return _run_layers(model, layers, (model.embeddings(input_ids), packing.seq_idx))


def mamba2_layers(layers, norm_f, ops, hidden, seq_idx) -> torch.Tensor:
    """``Mamba2Model``'s ``layers`` and final norm over packed rows of embeddings (R, T, D), with ``ops`` =
    (split_conv1d_scan, add_norm): each block's norm, mixer and residual add, the add fused into the next norm."""
    mix, add_norm = ops
    residual = None
    for block in layers:
        hidden, residual = add_norm(hidden, residual, block.norm, block.residual_in_fp32)
        hidden = _mamba2_mixer(block.mixer, hidden, seq_idx, mix)
    return add_norm(hidden, residual, norm_f, layers[-1].residual_in_fp32)[0]


def _mamba2_mixer(mixer, hidden, seq_idx, mix) -> torch.Tensor:
    """One ``Mamba2Mixer`` over packed rows (R, T, D) through ``mix`` (``mamba_split_conv1d_scan_combined``'s
    arguments, as transformers passes them in training)."""
    return mix(mixer.in_proj(hidden), mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias, mixer.dt_bias,
               -torch.exp(mixer.A_log.float()), D=mixer.D, chunk_size=mixer.chunk_size, seq_idx=seq_idx,
               dt_limit=mixer.time_step_limit, activation=mixer.activation, rmsnorm_weight=mixer.norm.weight,
               rmsnorm_eps=mixer.norm.variance_epsilon, outproj_weight=mixer.out_proj.weight,
               outproj_bias=mixer.out_proj.bias, headdim=mixer.head_dim, ngroups=mixer.n_groups,
               norm_before_gate=False)


# -- attention -----------------------------------------------------------------------------------------------------
def varlen_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, cu_seq_lens_q=None,
                     cu_seq_lens_k=None, max_length_q=None, max_length_k=None, **kwargs):
    """transformers attention function over packed rows (R, H, T, d) with torch's ``varlen_attn``: each sequence
    attends only within itself (causally for causal models). Returns (R, T, H, d)."""
    from torch.nn.attention.varlen import varlen_attn

    rows, length = query.shape[0], query.shape[2]
    # (R T, H, d), in the value's dtype (partial rotary embeddings leave queries and keys in fp32 under autocast)
    q, k, v = (t.transpose(1, 2).flatten(0, 1).to(value.dtype) for t in (query, key, value))
    causal = getattr(module, "is_causal", False)
    if "window_size" in inspect.signature(varlen_attn).parameters:
        options = {"window_size": (-1, 0) if causal else (-1, -1)}
    else:  # torch 2.9-2.11
        options = {"is_causal": causal}
    out = varlen_attn(q, k, v, cu_seq_lens_q, cu_seq_lens_k, max_length_q, max_length_k, scale=scaling, **options)
    return out.view(rows, length, *out.shape[1:]), None


def register_varlen_attention() -> None:
    """Make ``attn_implementation="varlen"`` name :func:`varlen_attention` in transformers."""
    from transformers import AttentionInterface

    AttentionInterface.register(VARLEN, varlen_attention)
