"""Plain-PyTorch models of the same sizes as the presets, built only from stock torch.nn layers.

They are the yardstick in `nslm bench train`: if nslm's own model is much slower than these, something
in nslm is wrong.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from nslm.errors import NslmError
from nslm.models import ModelConfig


class StockTransformer(nn.Module):
    """nn.TransformerEncoder with a causal mask, learned positions and a tied output head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.context_length, cfg.d_model)
        layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.n_head, cfg.d_ff, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layer, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, idx, targets):
        T = idx.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=idx.device)
        x = self.emb(idx) + self.pos(torch.arange(T, device=idx.device))
        x = self.norm(self.encoder(x, mask=mask, is_causal=True))
        logits = x @ self.emb.weight.T
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
    """The plain-PyTorch model of the same size as `cfg`; NslmError for an architecture without one."""
    if cfg.arch not in STOCK:
        raise NslmError(f"nslm bench train has no plain-PyTorch yardstick for model.arch {cfg.arch!r}; "
                        f"it measures {', '.join(STOCK)}")
    return STOCK[cfg.arch](cfg)
