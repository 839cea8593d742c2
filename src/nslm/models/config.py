"""ModelConfig: the one dataclass every model reads, serialised as the `model` part of config.json."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from nslm.errors import NslmError
from nslm.models.registry import model_class



def check_known_fields(cls, d: dict, what: str) -> None:
    """Refuse a settings dict with a key that the dataclass `cls` does not have, naming the known ones."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise NslmError(f"unknown {what} setting {unknown[0]!r}; known settings: {', '.join(sorted(names))}")


@dataclass
class ModelConfig:
    """Shape of a model. Transformer fields and RNN fields live side by side; each arch reads its own and
    checks its own (`check_config` of the class registered for `arch`)."""

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
        arch_class = model_class(self.arch)
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
        arch_class.check_config(self)
        return self
