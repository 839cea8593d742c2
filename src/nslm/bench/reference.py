"""Plain-PyTorch models of the same width and depth as the presets, built only from stock torch.nn layers
(the Transformer's with learned positions and a GELU MLP four times as wide, whatever the preset's).

They are the yardstick in `nslm bench train`: if nslm's own model is much slower than these, something
in nslm is wrong.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from nslm.errors import NslmError
from nslm.models import ModelConfig


class NanoGPTBlock(nn.Module):
    """One pre-norm block as nanoGPT writes it: LayerNorm, fused qkv, SDPA, GELU MLP four times as wide."""

    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.fc_out = nn.Linear(4 * d_model, d_model)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(y)
        return x + self.fc_out(F.gelu(self.fc(self.ln2(x))))


class StockTransformer(nn.Module):
    """The GPT a user writes in an afternoon after nanoGPT: learned positions, LayerNorm, GELU MLP 4x
    (whatever the preset's own MLP is), tied head, fp32 cross-entropy: the loop nslm has to beat. Same width,
    depth, heads, vocabulary and context as the preset; its MLP has more weights than a gated one
    (8 d^2 against 3 d d_ff), as in the published small-model loops it stands for."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.context_length, cfg.d_model)
        self.blocks = nn.ModuleList(NanoGPTBlock(cfg.d_model, cfg.n_head) for _ in range(cfg.n_layer))
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, idx, targets):
        x = self.emb(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.norm(x) @ self.emb.weight.T
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))


class StockRNN(nn.Module):
    """nn.LSTM / nn.GRU with a projection and a tied output head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        rnn = nn.LSTM if cfg.arch == "lstm" else nn.GRU
        self.rnn = rnn(cfg.d_model, cfg.hidden_size, cfg.n_layer, batch_first=True)
        self.proj = nn.Linear(cfg.hidden_size, cfg.d_model, bias=False)

    def forward(self, idx, targets):
        out, _ = self.rnn(self.emb(idx))
        logits = self.proj(out) @ self.emb.weight.T
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))


# the yardstick of each architecture that has one
STOCK = {"transformer": StockTransformer, "lstm": StockRNN, "gru": StockRNN}


def stock_model(cfg: ModelConfig) -> nn.Module:
    """The plain-PyTorch yardstick for `cfg`: a nanoGPT-style GPT of the same width, depth and heads (learned
    positions, a GELU MLP 4x wide) for a Transformer, nn.LSTM / nn.GRU of the same sizes for an RNN; NslmError
    for an architecture without one."""
    if cfg.arch not in STOCK:
        raise NslmError(f"nslm bench train has no plain-PyTorch yardstick for model.arch {cfg.arch!r}; "
                        f"it measures {', '.join(STOCK)}")
    return STOCK[cfg.arch](cfg)
