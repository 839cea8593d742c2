"""ModelConfig: the one dataclass every model reads, serialised as the `model` part of config.json."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from nslm.errors import NslmError

ARCHS = ("transformer", "lstm", "gru")
POS_ENCODINGS = ("learned", "sinusoidal", "rope")
NORMS = ("rmsnorm", "layernorm")
MLPS = ("gelu", "swiglu")


def check_known_fields(cls, d: dict, what: str) -> None:
    """Refuse a settings dict with a key that the dataclass `cls` does not have, naming the known ones."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise NslmError(f"unknown {what} setting {unknown[0]!r}; known settings: {', '.join(sorted(names))}")


@dataclass
class ModelConfig:
    """Shape of a model. Transformer fields and RNN fields live side by side; each arch reads its own."""

    arch: str = "transformer"
    vocab_size: int = 4096
    context_length: int = 256
    d_model: int = 128  # width of the residual stream (Transformer) or of the embedding (RNN)
    n_layer: int = 4
    n_head: int = 4
    d_ff: int = 512
    pos_encoding: str = "rope"
    norm: str = "rmsnorm"
    # "gelu": down(gelu(up(x))), as GPT-2; "swiglu": down(silu(gate(x)) * up(x)), as Llama (three matrices,
    # so d_ff about 2/3 of the gelu width keeps the size); the Llama layout is what most other tools load
    mlp: str = "gelu"
    dropout: float = 0.0
    bias: bool = False
    rope_base: float = 10000.0
    rnn_hidden: int = 0  # 0 means the same as d_model; otherwise a projection maps it back
    init_std: float = 0.02

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Build from a dict (config.json's `model`, a preset); unknown keys are an error."""
        check_known_fields(cls, d, "model")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def hidden_size(self) -> int:
        """The RNN's hidden size (rnn_hidden, or d_model when 0)."""
        return self.rnn_hidden or self.d_model

    def validate(self) -> "ModelConfig":
        """Raise NslmError naming the first setting that cannot make a working model."""
        if self.arch not in ARCHS:
            raise NslmError(f"model.arch must be one of {', '.join(ARCHS)}, not {self.arch!r}")
        for name in ("vocab_size", "context_length", "d_model", "n_layer"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise NslmError(f"model.{name} must be a positive whole number, not {value!r}")
        if self.vocab_size < 2:
            raise NslmError(f"model.vocab_size must be at least 2, not {self.vocab_size}")
        if self.context_length > 1 << 16 or self.d_model > 1 << 15 or self.n_layer > 512:
            raise NslmError("model size settings are absurdly large; check context_length, d_model and n_layer")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise NslmError(f"model.dropout must be in [0, 1), not {self.dropout!r}")
        if not isinstance(self.init_std, (int, float)) or self.init_std <= 0:
            raise NslmError(f"model.init_std must be positive, not {self.init_std!r}")
        if self.arch == "transformer":
            self._validate_transformer()
        else:
            if not isinstance(self.rnn_hidden, int) or self.rnn_hidden < 0 or self.rnn_hidden > 1 << 15:
                raise NslmError(f"model.rnn_hidden must be 0 (same as d_model) or a positive width, not {self.rnn_hidden!r}")
        return self

    def _validate_transformer(self) -> None:
        if not isinstance(self.n_head, int) or self.n_head < 1:
            raise NslmError(f"model.n_head must be a positive whole number, not {self.n_head!r}")
        if self.d_model % self.n_head:
            raise NslmError(f"model.n_head ({self.n_head}) must divide model.d_model ({self.d_model})")
        if self.pos_encoding == "rope" and (self.d_model // self.n_head) % 2:
            raise NslmError("rotary positions need an even head width (d_model / n_head)")
        if not isinstance(self.d_ff, int) or self.d_ff < 1:
            raise NslmError(f"model.d_ff must be a positive whole number, not {self.d_ff!r}")
        if self.pos_encoding not in POS_ENCODINGS:
            raise NslmError(f"model.pos_encoding must be one of {', '.join(POS_ENCODINGS)}, not {self.pos_encoding!r}")
        if self.norm not in NORMS:
            raise NslmError(f"model.norm must be one of {', '.join(NORMS)}, not {self.norm!r}")
        if self.mlp not in MLPS:
            raise NslmError(f"model.mlp must be one of {', '.join(MLPS)}, not {self.mlp!r}")
        if self.rope_base <= 1:
            raise NslmError(f"model.rope_base must be greater than 1, not {self.rope_base!r}")
