"""A recurrent language model (LSTM or GRU) with a tied embedding and a state carried between calls."""

from __future__ import annotations

import torch
import torch.nn as nn

from nslm.errors import NslmError
from nslm.models.base import TiedLM
from nslm.models.config import ModelConfig
from nslm.models.decode import NumpyRNNDecoder
from nslm.models.registry import register_arch


class RNNState:
    """The recurrent state after the tokens seen so far (h, or (h, c) for an LSTM); `pos` counts them."""

    def __init__(self):
        self.hidden = None
        self.pos = 0

    def reset(self) -> None:
        self.hidden, self.pos = None, 0

    @classmethod
    def join(cls, states: list["RNNState"]) -> "RNNState":
        """One state whose row i is states[i] (each of batch size 1; an empty one is the zero state)."""
        joined = cls()
        joined.pos = max(s.pos for s in states)
        template = next((s.hidden for s in states if s.hidden is not None), None)
        if template is None:
            return joined
        parts = template if isinstance(template, tuple) else (template,)
        rows = [s.hidden if s.hidden is not None else tuple(torch.zeros_like(p) for p in parts) for s in states]
        rows = [r if isinstance(r, tuple) else (r,) for r in rows]
        hidden = tuple(torch.cat([r[k] for r in rows], dim=1) for k in range(len(parts)))
        joined.hidden = hidden if isinstance(template, tuple) else hidden[0]
        return joined

    def keep(self, rows: list[int]) -> "RNNState":
        """A state of only these rows, in this order."""
        kept = RNNState()
        if isinstance(self.hidden, tuple):
            kept.hidden = tuple(h[:, rows] for h in self.hidden)
        elif self.hidden is not None:
            kept.hidden = self.hidden[:, rows]
        kept.pos = self.pos
        return kept


@register_arch("lstm", "gru")
class RNNLM(TiedLM):
    windowed = False

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        if not isinstance(cfg.rnn_hidden, int) or cfg.rnn_hidden < 0 or cfg.rnn_hidden > 1 << 15:
            raise NslmError(f"model.rnn_hidden must be 0 (same as d_model) or a positive width, not {cfg.rnn_hidden!r}")

    @classmethod
    def describe(cls, cfg: ModelConfig) -> str:
        return f"{cfg.arch} {cfg.n_layer}L h{cfg.hidden_size}"

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        rnn_cls = nn.LSTM if cfg.arch == "lstm" else nn.GRU
        hidden = cfg.hidden_size
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.rnn = rnn_cls(cfg.d_model, hidden, num_layers=cfg.n_layer, batch_first=True,
                           dropout=cfg.dropout if cfg.n_layer > 1 else 0.0)
        # the head is the embedding matrix, so the output must come back to the embedding width
        self.proj = nn.Linear(hidden, cfg.d_model, bias=False) if hidden != cfg.d_model else None
        nn.init.normal_(self.tok_emb.weight, std=cfg.init_std)
        if self.proj is not None:
            nn.init.normal_(self.proj.weight, std=hidden**-0.5)

    numpy_decoder_class = NumpyRNNDecoder

    def new_cache(self, batch_size: int = 1) -> RNNState:
        """An empty state for `forward(..., cache=)`."""
        return RNNState()

    def features(self, idx: torch.Tensor, cache: RNNState | None = None) -> torch.Tensor:
        """Final hidden states [B, T, d_model] (after the projection, before the output head)."""
        x = self.drop(self.tok_emb(idx))
        out, hidden = self.rnn(x, cache.hidden if cache is not None else None)
        if cache is not None:
            cache.hidden, cache.pos = hidden, cache.pos + idx.shape[1]
        out = self.drop(out)
        return self.proj(out) if self.proj is not None else out

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6 per weight, the tied head included."""
        return 6 * (self.param_counts()["non_embedding"] + self.cfg.vocab_size * self.cfg.d_model)
