"""A decoder-only Transformer: tied embeddings, pre-norm blocks, SDPA attention, optional KV cache."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from nslm.errors import NslmError
from nslm.models.base import TiedLM
from nslm.models.config import ModelConfig
from nslm.models.decode import NumpyDecoder
from nslm.models.registry import register_arch

POS_ENCODINGS = ("learned", "sinusoidal", "rope")
NORMS = ("rmsnorm", "layernorm")
MLPS = ("gelu", "swiglu")


class KVCache:
    """Keys and values of every layer for the tokens seen so far; `pos` is how many that is.

    Caches of single sequences can be joined into one whose rows hold different lengths (`lengths`,
    `pos` is then the longest); it takes one new token per row, and batched decoding drops finished rows
    (`keep`) and puts a row's refilled window back (`put`).
    """

    def __init__(self, cfg: ModelConfig, batch_size: int, device, dtype, kv: torch.Tensor | None = None):
        head_dim = cfg.d_model // cfg.n_head
        # keys and values side by side, so a decoding step writes both with one copy
        shape = (cfg.n_layer, 2, batch_size, cfg.n_head, cfg.context_length, head_dim)
        self.kv = torch.zeros(shape, device=device, dtype=dtype) if kv is None else kv
        self.layers = [self.kv[i] for i in range(cfg.n_layer)]  # per-layer views, made once, not per token
        self.cfg = cfg
        self.batch_size = batch_size
        self.pos = 0
        self.capacity = cfg.context_length
        self.lengths: list[int] | None = None  # per row, in a joined cache
        self.row_pos: torch.Tensor | None = None  # `lengths` as a tensor, for the step's indexing

    def reset(self) -> None:
        self.pos = 0
        self.lengths = self.row_pos = None

    @classmethod
    def join(cls, caches: list["KVCache"]) -> "KVCache":
        """One cache whose row i is caches[i] (each of batch size 1)."""
        first = caches[0]
        joined = cls(first.cfg, len(caches), None, None, kv=torch.cat([c.kv for c in caches], dim=2))
        joined._set_lengths([c.pos for c in caches])
        return joined

    def keep(self, rows: list[int]) -> "KVCache":
        """A cache of only these rows, in this order."""
        kept = KVCache(self.cfg, len(rows), None, None, kv=self.kv[:, :, rows])
        kept._set_lengths([self.lengths[r] for r in rows])
        return kept

    def put(self, row: int, cache: "KVCache") -> None:
        """Replace row `row` by the single sequence of `cache`."""
        self.kv[:, :, row] = cache.kv[:, :, 0]
        lengths = list(self.lengths)
        lengths[row] = cache.pos
        self._set_lengths(lengths)

    def _set_lengths(self, lengths: list[int]) -> None:
        self.lengths = lengths
        self.row_pos = torch.tensor(lengths, device=self.kv.device)
        self.pos = max(lengths)


def norm_layer(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.d_model, eps=1e-5)
    return nn.LayerNorm(cfg.d_model, bias=cfg.bias)


def norm_step(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """norm(x) for a decoding step. An fp32 RMSNorm is written out: the same operations, in the same order,
    as torch's CPU rms_norm, which dispatches about 20 tensor operations where these are 6."""
    if isinstance(norm, nn.RMSNorm) and x.dtype == torch.float32:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight
    return norm(x)


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """The fixed sine/cosine position table of "Attention is all you need", shape [length, dim]."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


def rope_tables(length: int, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, each [length, head_dim] (angles repeated for both halves)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """sin with its first half negated: `x.roll(half) * signed_sin` is apply_rope's rotated half times sin."""
    half = sin.shape[-1] // 2
    return torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + head_dim/2) of x [B, H, T, hd] by the angles of their positions."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.head_dim = cfg.d_model // cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x, rope=None, cache: KVCache | None = None, layer: int = 0):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        drop = self.dropout if self.training else 0.0
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        else:
            start, end = cache.pos, cache.pos + T
            kv = cache.layers[layer]
            kv[0, :B, :, start:end] = k
            kv[1, :B, :, start:end] = v
            k, v = kv[0, :B, :, :end], kv[1, :B, :, :end]
            # new token i (at position start + i) may look at every cached position up to its own
            mask = None
            if T > 1:
                mask = torch.ones(T, end, dtype=torch.bool, device=x.device).tril(diagonal=start)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_drop(self.proj(y))

    def step(self, x, rope, cache: KVCache, layer: int, rows=None, mask=None):
        """forward() for one new token per row, x [B, C], in eval mode: fewer tensor operations for the
        same arithmetic, so the logits are bitwise equal. `rope` holds cos and signed sin for the rows of
        q, k and v (1 and 0 for v): one rotation of the whole qkv, by a roll. A joined cache passes `rows`
        (0..B-1) and the `mask` of the positions each row may see."""
        B, C = x.shape
        qkv = F.linear(x, self.qkv.weight, self.qkv.bias).view(B, 3, self.n_head, 1, self.head_dim)
        if rope is not None:
            qkv = qkv * rope[0] + qkv.roll(self.head_dim // 2, -1) * rope[1]
        kv = cache.layers[layer]  # [2, B, n_head, context, head_dim]
        if mask is None:
            kv.narrow(3, cache.pos, 1).copy_(qkv[:, 1:].transpose(0, 1))
        else:  # rows of different lengths: each writes at its own position
            kv[:, rows, :, cache.row_pos] = qkv[:, 1:, :, 0]
        keys, values = kv.narrow(3, 0, cache.pos + 1).unbind(0)
        y = F.scaled_dot_product_attention(qkv.select(1, 0), keys, values, attn_mask=mask)
        return F.linear(y.view(B, C), self.proj.weight, self.proj.bias)


class MLP(nn.Module):
    """down(gelu(up(x))), or down(silu(gate(x)) * up(x)) when cfg.mlp is "swiglu"."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gated = cfg.mlp == "swiglu"
        if self.gated:
            self.gate = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.up = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        hidden = F.silu(self.gate(x)) * self.up(x) if self.gated else F.gelu(self.up(x))
        return self.drop(self.down(hidden))

    def step(self, x):
        """forward() in eval mode without module calls (the same operations)."""
        up = F.linear(x, self.up.weight, self.up.bias)
        hidden = F.silu(F.linear(x, self.gate.weight, self.gate.bias)) * up if self.gated else F.gelu(up)
        return F.linear(hidden, self.down.weight, self.down.bias)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1 = norm_layer(cfg)
        self.attn = Attention(cfg)
        self.norm2 = norm_layer(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x, rope=None, cache=None, layer=0):
        x = x + self.attn(self.norm1(x), rope, cache, layer)
        return x + self.mlp(self.norm2(x))

    def step(self, x, rope, cache, layer, rows=None, mask=None):
        """forward() for one new token per row with a cache, in eval mode (see Attention.step)."""
        x = x + self.attn.step(norm_step(self.norm1, x), rope, cache, layer, rows, mask)
        return x + self.mlp.step(norm_step(self.norm2, x))


@register_arch("transformer")
class Transformer(TiedLM):
    windowed = True

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        if not isinstance(cfg.n_head, int) or cfg.n_head < 1:
            raise NslmError(f"model.n_head must be a positive whole number, not {cfg.n_head!r}")
        if cfg.d_model % cfg.n_head:
            raise NslmError(f"model.n_head ({cfg.n_head}) must divide model.d_model ({cfg.d_model})")
        if cfg.pos_encoding == "rope" and (cfg.d_model // cfg.n_head) % 2:
            raise NslmError("rotary positions need an even head width (d_model / n_head)")
        if not isinstance(cfg.d_ff, int) or cfg.d_ff < 1:
            raise NslmError(f"model.d_ff must be a positive whole number, not {cfg.d_ff!r}")
        if cfg.pos_encoding not in POS_ENCODINGS:
            raise NslmError(f"model.pos_encoding must be one of {', '.join(POS_ENCODINGS)}, not {cfg.pos_encoding!r}")
        if cfg.norm not in NORMS:
            raise NslmError(f"model.norm must be one of {', '.join(NORMS)}, not {cfg.norm!r}")
        if cfg.mlp not in MLPS:
            raise NslmError(f"model.mlp must be one of {', '.join(MLPS)}, not {cfg.mlp!r}")
        if cfg.rope_base <= 1:
            raise NslmError(f"model.rope_base must be greater than 1, not {cfg.rope_base!r}")

    @classmethod
    def describe(cls, cfg: ModelConfig) -> str:
        return f"{cfg.arch} {cfg.n_layer}L d{cfg.d_model} {cfg.pos_encoding}"

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        if cfg.pos_encoding == "learned":
            self.pos_emb = nn.Embedding(cfg.context_length, cfg.d_model)
        elif cfg.pos_encoding == "sinusoidal":
            # scaled so that each entry's root mean square is init_std, as a learned position table starts: the
            # bare table (entries +-1) is about 35 times the size of the token embeddings at init and drowns
            # them, which cost 0.5-0.7 bits per byte after 800K tokens in the study (docs/study.md, question 4)
            table = sinusoidal_table(cfg.context_length, cfg.d_model) * (cfg.init_std * math.sqrt(2.0))
            self.register_buffer("pos_table", table, persistent=False)
        else:
            cos, sin = rope_tables(cfg.context_length, cfg.d_model // cfg.n_head, cfg.rope_base)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
            # the decoding step's tables [length, 3, 1, 1, head_dim]: rows for q, k, and v (left as it is)
            self.register_buffer("rope_cos3", torch.stack([cos, cos, torch.ones_like(cos)], 1)[:, :, None, None],
                                 persistent=False)
            self.register_buffer("rope_ssin3", torch.stack([signed_sin(sin), signed_sin(sin), torch.zeros_like(sin)], 1)[:, :, None, None],
                                 persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm_f = norm_layer(cfg)
        self.apply(self._init_weights)
        # residual projections start smaller so the sum over layers keeps unit scale (GPT-2)
        for name, p in self.named_parameters():
            if name.endswith("attn.proj.weight") or name.endswith("mlp.down.weight"):
                nn.init.normal_(p, std=cfg.init_std / math.sqrt(2 * cfg.n_layer))

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.cfg.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    numpy_decoder_class = NumpyDecoder

    def new_cache(self, batch_size: int = 1) -> KVCache:
        """An empty KV cache for `forward(..., cache=)`; it holds at most context_length tokens."""
        p = self.tok_emb.weight
        return KVCache(self.cfg, batch_size, p.device, p.dtype)

    def features(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Final hidden states [B, T, d_model] (after the last norm, before the output head)."""
        B, T = idx.shape
        if T == 1 and cache is not None and not self.training and B == cache.batch_size and cache.pos < cache.capacity:
            return self._step(idx, cache)
        if cache is not None and cache.lengths is not None:
            raise ValueError("a joined cache takes one new token per row, in eval mode")
        start = cache.pos if cache is not None else 0
        if start + T > self.cfg.context_length:
            raise ValueError(f"{start + T} positions exceed the context length {self.cfg.context_length}")
        x = self.tok_emb(idx)
        rope = None
        if self.cfg.pos_encoding == "learned":
            x = x + self.pos_emb(torch.arange(start, start + T, device=idx.device))
        elif self.cfg.pos_encoding == "sinusoidal":
            x = x + self.pos_table[start : start + T].to(x.dtype)
        else:
            rope = (self.rope_cos[start : start + T], self.rope_sin[start : start + T])
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, rope, cache, i)
        if cache is not None:
            cache.pos += T
        return self.norm_f(x)

    def _step(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """features() of one new token per row [B, 1]: the decoding step, where the ~30 tensor operations
        per layer each cost more than their arithmetic, so it calls the blocks' `step`s (same results) on
        [B, C] rows (a 3-d input costs every linear two more reshapes)."""
        pos, rows, mask = cache.pos, None, None
        if cache.lengths is not None:  # a joined cache: row i is at position lengths[i]
            pos = cache.row_pos
            rows = torch.arange(len(pos), device=pos.device)
            mask = (torch.arange(cache.pos + 1, device=pos.device) <= pos[:, None])[:, None, None]
        x = F.embedding(idx.view(-1), self.tok_emb.weight)
        rope = None
        if self.cfg.pos_encoding == "learned":
            x = x + self.pos_emb.weight[pos]
        elif self.cfg.pos_encoding == "sinusoidal":
            x = x + self.pos_table[pos].to(x.dtype)
        else:
            rope = (self.rope_cos3[pos], self.rope_ssin3[pos])
        for i, block in enumerate(self.blocks):
            x = block.step(x, rope, cache, i, rows, mask)
        if cache.lengths is None:
            cache.pos = pos + 1
        else:
            cache._set_lengths([n + 1 for n in cache.lengths])
        return norm_step(self.norm_f, x).unsqueeze(1)

    def embedding_params(self) -> int:
        extra = self.pos_emb.weight.numel() if self.cfg.pos_encoding == "learned" else 0
        return self.tok_emb.weight.numel() + extra

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6 per weight (incl. the tied head) plus attention scores."""
        c = self.cfg
        matmul_weights = self.param_counts()["non_embedding"] + c.vocab_size * c.d_model
        return 6 * matmul_weights + 12 * c.n_layer * c.d_model * c.context_length
