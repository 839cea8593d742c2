"""ModelConfig: the one dataclass every model reads, serialised as the `model` part of config.json."""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass

from nslm.errors import NslmError
from nslm.models.registry import model_class

MAX_PARAMETERS = 1_000_000_000  # nslm trains small models; a config past this is a typo, not a plan
FP32 = 4  # bytes per weight
COUNTED_ARCHS = ("transformer", "lstm", "gru")  # the layouts `ModelConfig.param_counts` knows


def physical_memory() -> int | None:
    """Bytes of RAM in this machine, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def gigabytes(n: int) -> str:
    return f"{n / 1e9:,.1f} GB"


def check_known_fields(cls, d: dict, what: str) -> None:
    """Refuse a settings dict with a key that the dataclass `cls` does not have, naming the known ones."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise NslmError(f"unknown {what} setting {unknown[0]!r}; known settings: {', '.join(sorted(names))}")


TYPE_WORDS = {int: "a whole number", float: "a number", str: "text", bool: "true or false"}


def _fits(value, kind) -> bool:
    if kind is bool or kind is str:
        return isinstance(value, kind)
    if isinstance(value, bool):  # True is an int to Python, never a number to a user
        return False
    if kind is int:
        return isinstance(value, int)
    return isinstance(value, (int, float)) and math.isfinite(value)


def check_field_types(cls, d: dict, section: str) -> None:
    """Refuse a value whose type differs from the dataclass field's annotation (`int`, `float`, `str`,
    `bool`, or one of them `| None`), naming the field as `section.field`."""
    hints = typing.get_type_hints(cls)
    for name, value in d.items():
        kinds = typing.get_args(hints[name]) if isinstance(hints[name], types.UnionType) else (hints[name],)
        if value is None and type(None) in kinds:
            continue
        if not any(_fits(value, kind) for kind in kinds if kind is not type(None)):
            words = " or ".join(TYPE_WORDS[k] for k in kinds if k is not type(None))
            optional = " (or null)" if type(None) in kinds else ""
            raise NslmError(f"{section}.{name} must be {words}{optional}, not {value!r}")


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
        check_field_types(cls, d, "model")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def hidden_size(self) -> int:
        """The RNN's hidden size (rnn_hidden, or d_model when 0)."""
        return self.rnn_hidden or self.d_model

    def param_counts(self) -> dict | None:
        """{"total", "embedding", "non_embedding"} parameters of the model this config builds (what the built
        model's `param_counts()` gives), computed without building it: an absurd config costs nothing.
        None for an architecture registered from elsewhere, whose layout this does not know."""
        if self.arch not in COUNTED_ARCHS:
            return None
        d, b = self.d_model, int(self.bias)
        embedding = self.vocab_size * d
        if self.arch != "transformer":
            h, gates = self.hidden_size, (4 if self.arch == "lstm" else 3)
            rest = sum(gates * h * ((d if i == 0 else h) + h + 2) for i in range(self.n_layer)) + (h * d if h != d else 0)
        else:
            embedding += self.context_length * d if self.pos_encoding == "learned" else 0
            norm = d * (2 if self.norm == "layernorm" and self.bias else 1)
            attention = 4 * d * d + 4 * d * b
            matrices = 3 if self.mlp == "swiglu" else 2
            mlp = matrices * d * self.d_ff + (matrices - 1) * self.d_ff * b + d * b
            rest = self.n_layer * (2 * norm + attention + mlp) + norm
        return {"total": embedding + rest, "embedding": embedding, "non_embedding": rest}

    def training_memory(self, batch_size: int) -> int:
        """A rough count of the bytes training needs at `batch_size` windows in fp32: weights, gradients and
        AdamW's two moments (16 bytes a weight), the activations kept for the backward pass, and the logits."""
        tokens = batch_size * self.context_length
        if self.arch == "transformer":
            per_layer = 16 * self.d_model + 3 * self.d_ff  # numbers kept per token and layer
        else:
            per_layer = 6 * self.hidden_size
        logits = 3 * self.vocab_size  # logits, their log-softmax and its gradient
        params = self.param_counts()["total"] if self.param_counts() else 0
        return FP32 * (4 * params + tokens * (self.n_layer * per_layer + logits))

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
        self._validate_size()
        return self

    def _validate_size(self) -> None:
        if self.param_counts() is None:
            return
        params = self.param_counts()["total"]
        if params > MAX_PARAMETERS:
            raise NslmError(f"this model config makes {params:,} parameters, more than nslm's limit of "
                            f"{MAX_PARAMETERS:,}; check vocab_size, d_model, n_layer and d_ff")
        memory = physical_memory()
        if memory and FP32 * params > memory:
            raise NslmError(f"this model config makes {params:,} parameters ({gigabytes(FP32 * params)} of weights), "
                            f"more than this machine's {gigabytes(memory)} of memory")
