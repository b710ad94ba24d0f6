"""BiMamba-2: a BERT-shaped encoder whose self-attention is replaced by a bidirectional Mamba-2 mixer.

Each layer keeps BERT's post-norm layout (mixer -> add & LayerNorm -> GELU MLP -> add & LayerNorm), so a BERT
checkpoint converts into one (:func:`from_bert`): embeddings, MLPs and norms are copied, and each mixer starts from
the attention it replaces, read as linear attention (values -> x, keys -> B, queries -> C, output projection kept),
as in "The Mamba in the Llama" and MOHAWK. The mixer scans every sequence forwards and backwards with shared weights
(one input projection, two scans, one output projection), so every token reads the whole text as in BERT.
Registered with transformers' Auto classes under model type ``bimamba2``."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

MODEL_TYPE = "bimamba2"


class BiMamba2Config(PretrainedConfig):
    """Sizes of a BiMamba-2 encoder; the defaults are all-MiniLM-L6-v2's shape (12 heads of 32 dims, each with its own
    B and C of state size 32, as its 12 attention heads have their own keys and queries)."""

    model_type = MODEL_TYPE
    bidirectional = True  # an encoder: every position reads the whole input

    def __init__(self, vocab_size=30522, hidden_size=384, num_hidden_layers=6, intermediate_size=1536, num_heads=12,
                 head_dim=32, state_size=32, conv_kernel=4, chunk_size=32, hidden_act="gelu", hidden_dropout_prob=0.1,
                 max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12, initializer_range=0.02,
                 pad_token_id=0, **kwargs):
        self.vocab_size, self.hidden_size, self.num_hidden_layers = vocab_size, hidden_size, num_hidden_layers
        self.intermediate_size, self.num_heads, self.head_dim = intermediate_size, num_heads, head_dim
        self.state_size, self.conv_kernel, self.chunk_size = state_size, conv_kernel, chunk_size
        self.hidden_act, self.hidden_dropout_prob = hidden_act, hidden_dropout_prob
        self.max_position_embeddings, self.type_vocab_size = max_position_embeddings, type_vocab_size
        self.layer_norm_eps, self.initializer_range = layer_norm_eps, initializer_range
        super().__init__(pad_token_id=pad_token_id, **kwargs)


class Embeddings(nn.Module):
    """BERT's: word + absolute position + token type, then LayerNorm and dropout."""

    def __init__(self, config: BiMamba2Config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids=None):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
        h = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings(types)
        return self.dropout(self.LayerNorm(h))


class BiMamba2Mixer(nn.Module):
    """Mamba-2 token mixing in both directions with shared weights: ``in_proj`` -> [z | x B C | dt]; causal conv and
    SSD scan over the sequence and over its reverse; per-head gated RMSNorm; the two directions summed; ``out_proj``."""

    def __init__(self, config: BiMamba2Config):
        super().__init__()
        h, p, n = config.num_heads, config.head_dim, config.state_size
        self.heads, self.head_dim, self.state, self.chunk_size = h, p, n, config.chunk_size
        self.inner = h * p
        self.conv_dim = self.inner + 2 * h * n
        self.in_proj = nn.Linear(config.hidden_size, self.inner + self.conv_dim + h)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, config.conv_kernel, groups=self.conv_dim)
        self.dt_bias = nn.Parameter(torch.zeros(h))
        self.A_log = nn.Parameter(torch.zeros(h))
        self.D = nn.Parameter(torch.zeros(h))
        self.norm_weight = nn.Parameter(torch.ones(self.inner))
        self.out_proj = nn.Linear(self.inner, config.hidden_size)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self, dt: float = 1.0, decay_log: float = -6.0) -> None:
        """Slow decays (A = -exp(``decay_log``)), step ``dt``, no skip, unit norm, identity convolution: with the
        projections of an attention layer the mixer then starts as that layer read as linear attention."""
        self.dt_bias.fill_(math.log(math.expm1(dt)))
        self.A_log.fill_(decay_log)
        self.D.zero_()
        self.norm_weight.fill_(1.0)
        self.conv1d.weight.zero_()
        self.conv1d.weight[:, 0, -1] = 1.0
        self.conv1d.bias.zero_()

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, D) for a right-padded batch: the backward scan reads each row flipped, so its pads come
        first, where zeroed inputs keep its state at zero until the first real token. Without gradients on a CPU,
        ``_kernels.cpu_mixer`` runs everything between the projections as one compiled pass."""
        from .._kernels import cpu_mixer

        mix = None if torch.is_grad_enabled() else cpu_mixer(hidden.device.type)
        if mix is not None:
            # the in-projection as two products, as BLAS runs a width of 1,536 + 12 faster than one of 1,548
            w, b, h = self.in_proj.weight, self.in_proj.bias, self.heads
            y = mix(F.linear(hidden, w[:-h], b[:-h]), F.linear(hidden, w[-h:], b[-h:]), mask, self.conv1d.weight[:, 0],
                    self.conv1d.bias, self.dt_bias, -torch.exp(self.A_log.float()), self.D, self.norm_weight, h,
                    self.head_dim, self.state)
            return self.out_proj(y.to(self.out_proj.weight.dtype))
        projected = self.in_proj(hidden) * mask[..., None].to(hidden.dtype)
        forwards = self._scan(projected, mask)
        backwards = self._scan(projected.flip(1), mask.flip(1)).flip(1)
        return self.out_proj(forwards + backwards)

    def _scan(self, projected: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One direction: causal conv, SSD scan and gated norm of the projected inputs (zero at pads)."""
        from .._kernels import ssd_ops

        chunk_scan, conv = ssd_ops(projected.device.type)
        b, length, _ = projected.shape
        z, xbc, dt = projected.split([self.inner, self.conv_dim, self.heads], dim=-1)
        xbc = conv(xbc.transpose(1, 2).contiguous(), self.conv1d.weight[:, 0], self.conv1d.bias,
                   activation="silu").transpose(1, 2) * mask[..., None].to(xbc.dtype)
        x, B, C = xbc.split([self.inner, self.heads * self.state, self.heads * self.state], dim=-1)
        y = chunk_scan(x.reshape(b, length, self.heads, self.head_dim).contiguous(), dt.contiguous(),
                       -torch.exp(self.A_log.float()), B.reshape(b, length, self.heads, self.state).contiguous(),
                       C.reshape(b, length, self.heads, self.state).contiguous(), self.chunk_size, D=self.D,
                       dt_bias=self.dt_bias, dt_softplus=True)
        return self._gated_norm(y.reshape(b, length, self.inner), z)

    def _gated_norm(self, y: torch.Tensor, z: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        """RMSNorm of ``y * silu(z)`` over each head's channels (mamba_ssm's grouped RMSNormGated)."""
        gated = (y.float() * F.silu(z.float())).unflatten(-1, (self.heads, self.head_dim))
        normed = gated * torch.rsqrt(gated.pow(2).mean(-1, keepdim=True) + eps)
        return (normed.flatten(-2) * self.norm_weight.float()).to(self.out_proj.weight.dtype)


class BiMamba2Layer(nn.Module):
    """BERT's post-norm block with the mixer in place of self-attention."""

    def __init__(self, config: BiMamba2Config):
        super().__init__()
        from transformers.activations import ACT2FN

        self.mixer = BiMamba2Mixer(config)
        self.mixer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.intermediate = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.output = nn.Linear(config.intermediate_size, config.hidden_size)
        self.output_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.mixer_norm(hidden + self.dropout(self.mixer(hidden, mask)))
        return self.output_norm(hidden + self.dropout(self.output(self.act(self.intermediate(hidden)))))


class BiMamba2Model(PreTrainedModel):
    """Embeddings and BiMamba-2 layers -> ``last_hidden_state`` (and every layer's states on request)."""

    config_class = BiMamba2Config
    base_model_prefix = MODEL_TYPE

    def __init__(self, config: BiMamba2Config):
        super().__init__(config)
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(BiMamba2Layer(config) for _ in range(config.num_hidden_layers))
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, BiMamba2Mixer):
            module.reset_ssm_parameters()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False, **kwargs):
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        hidden = self.embeddings(input_ids, token_type_ids)
        states = [hidden]
        for layer in self.layers:
            hidden = layer(hidden, mask)
            states.append(hidden)
        return BaseModelOutput(last_hidden_state=hidden, hidden_states=tuple(states) if output_hidden_states else None)


@torch.no_grad()
def from_bert(bert) -> BiMamba2Model:
    """A BiMamba-2 model converted from a BERT ``BertModel``: everything but self-attention copied; each mixer's x, B,
    C and output projections taken from the values, keys, queries (scaled as attention scales them) and output
    projection of the attention it replaces; the gate constant (z = 0 weights, bias 3)."""
    c = bert.config
    heads = c.num_attention_heads
    config = BiMamba2Config(vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
                            intermediate_size=c.intermediate_size, num_heads=heads, head_dim=c.hidden_size // heads,
                            state_size=c.hidden_size // heads, hidden_act=c.hidden_act,
                            hidden_dropout_prob=c.hidden_dropout_prob,
                            max_position_embeddings=c.max_position_embeddings, type_vocab_size=c.type_vocab_size,
                            layer_norm_eps=c.layer_norm_eps, pad_token_id=c.pad_token_id)
    model = BiMamba2Model(config)
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm"):
        getattr(model.embeddings, name).load_state_dict(getattr(bert.embeddings, name).state_dict())
    scale = (c.hidden_size // heads) ** -0.5
    for layer, source in zip(model.layers, bert.encoder.layer):
        attention = source.attention
        mixer = layer.mixer
        q, k, v = attention.self.query, attention.self.key, attention.self.value
        inner, bc = mixer.inner, mixer.heads * mixer.state
        rows = [(slice(inner, 2 * inner), v, 1.0), (slice(2 * inner, 2 * inner + bc), k, 1.0),
                (slice(2 * inner + bc, 2 * inner + 2 * bc), q, scale)]
        mixer.in_proj.weight.zero_()
        mixer.in_proj.bias.zero_()
        mixer.in_proj.bias[:inner] = 3.0  # z: silu(3) everywhere, a constant gate that the RMSNorm cancels
        for part, linear, factor in rows:
            mixer.in_proj.weight[part] = linear.weight * factor
            mixer.in_proj.bias[part] = linear.bias * factor
        mixer.out_proj.load_state_dict(attention.output.dense.state_dict())
        layer.mixer_norm.load_state_dict(attention.output.LayerNorm.state_dict())
        layer.intermediate.load_state_dict(source.intermediate.dense.state_dict())
        layer.output.load_state_dict(source.output.dense.state_dict())
        layer.output_norm.load_state_dict(source.output.LayerNorm.state_dict())
    return model


AutoConfig.register(MODEL_TYPE, BiMamba2Config)
AutoModel.register(BiMamba2Config, BiMamba2Model)
