"""TrainConfig (the `train` part of config.json) and the dotted `--set section.field=value` overrides."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

import torch

from nslm.device import DEVICES, DTYPES, world_size
from nslm.errors import NslmError, what_is_there
from nslm.sampling import check_seed
from nslm.train.optim import OPTIMIZERS
from nslm.train.step import default_batch_threads
from nslm.models.config import check_field_types, check_known_fields


# train.batch_size when unset, by device type. On a 2-core CPU the 1M Transformer trains at about the same
# tokens/s from 4 to 32 windows a step; at the 3.7M tokens of a 10-minute run 16 windows learned most per token
# (8 lead up to about 1M tokens, 32 trail throughout: README "Training").
DEFAULT_BATCH_SIZE = {"cpu": 16, "cuda": 32, "mps": 32}


@dataclass
class TrainConfig:
    """How to train. Limits: the first of max_steps / max_tokens / max_minutes reached ends the run;
    with none given, max_steps=2000. The learning-rate schedule follows the same progress."""

    batch_size: int | None = None  # windows per micro-step (per process under DDP); None: the device's default
    grad_accum: int = 1
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    cooldown: float | None = None  # share of the run the lr decays over, linearly, after a flat top; None: cosine
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    optimizer: str = "adamw"  # "adamw", or "muon": Muon on hidden matrices, AdamW on embeddings, norms, biases
    muon_momentum: float = 0.95
    # with optimizer "muon": the lr of what AdamW updates beside it (embedding, norms, biases) as a multiple of
    # train.lr; optimizer "adamw" updates everything at train.lr and ignores it
    adamw_lr_ratio: float = 1.0
    grad_clip: float = 1.0
    max_steps: int | None = None
    max_tokens: int | None = None
    max_minutes: float | None = None
    stop_after_steps: int | None = None  # stop early as if interrupted (resume later continues the schedule)
    eval_interval: int = 200
    eval_tokens: int = 131072  # validation splits larger than this are estimated on fixed windows
    log_interval: int = 10
    sample_tokens: int = 48
    sample_prompt: str = "Once upon a time"
    seed: int = 1337
    device: str = "auto"
    dtype: str = "auto"
    compile: bool | None = None  # torch.compile the model; None: on for a Transformer on a CUDA GPU, where it pays
    threads: int = 0  # CPU threads for PyTorch; 0 keeps PyTorch's default (all cores)
    # on a CPU: threads that each run a share of a micro-batch's windows on one PyTorch thread (nslm.train.step);
    # None: one per PyTorch thread; always 1 on a GPU, under DDP and with compile
    batch_threads: int | None = None
    deterministic: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        check_known_fields(cls, d, "training")
        check_field_types(cls, d, "train")
        return cls(**d).validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def for_device(self, device: torch.device, dropout: float = 0.0) -> "TrainConfig":
        """This config with the batch size resolved: train.batch_size where set, else DEFAULT_BATCH_SIZE's
        entry for the device type (a CPU gains from more, smaller steps at the same tokens/s; a GPU needs
        many windows a step to be busy); and train.batch_threads: 1 off the CPU, under DDP (each process is
        already a core), with compile and with dropout (whose masks would not repeat), else as set or one per
        PyTorch thread."""
        batch = self.batch_size
        if batch is None:
            batch = DEFAULT_BATCH_SIZE.get(device.type, DEFAULT_BATCH_SIZE["cuda"])
        shards = self.batch_threads
        if shards is not None and shards > 1 and dropout > 0:
            raise NslmError(f"train.batch_threads {shards} needs model.dropout 0: dropout's masks come from one "
                            "random generator, which threads would draw from in a different order each run; "
                            "set train.batch_threads=1")
        if device.type != "cpu" or world_size() > 1 or self.compile or dropout > 0:
            shards = 1
        elif shards is None:
            shards = default_batch_threads(batch, self.threads or torch.get_num_threads())
        return dataclasses.replace(self, batch_size=batch, batch_threads=shards)

    def resolved_limits(self) -> tuple[int | None, int | None, float | None]:
        """(max_steps, max_tokens, max_minutes) with the default step limit when none is set."""
        if self.max_steps is None and self.max_tokens is None and self.max_minutes is None:
            return 2000, None, None
        return self.max_steps, self.max_tokens, self.max_minutes

    def validate(self) -> "TrainConfig":
        def positive_int(name, allow_none=False, allow_zero=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if allow_zero else 1):
                raise NslmError(f"train.{name} must be a {'non-negative' if allow_zero else 'positive'} whole number, not {v!r}")

        for name in ("grad_accum", "eval_interval", "log_interval", "eval_tokens"):
            positive_int(name)
        for name in ("batch_size", "batch_threads", "max_steps", "max_tokens", "stop_after_steps"):
            positive_int(name, allow_none=True)
        for name in ("warmup_steps", "sample_tokens", "threads"):
            positive_int(name, allow_zero=True)
        if self.batch_threads is not None and self.batch_threads > 256:
            raise NslmError(f"train.batch_threads must be at most 256 (one per core is the point), not {self.batch_threads}")
        check_seed(self.seed, "train.seed")
        if not isinstance(self.lr, (int, float)) or not 0 < self.lr < 1:
            raise NslmError(f"train.lr must be a positive learning rate below 1, not {self.lr!r}")
        if self.cooldown is not None and not 0 < self.cooldown <= 1:
            raise NslmError(f"train.cooldown must be a share of the run in (0, 1] (or null for a cosine), "
                            f"not {self.cooldown!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise NslmError(f"train.min_lr_ratio must be in [0, 1], not {self.min_lr_ratio!r}")
        if not 0 <= self.weight_decay < 10:
            raise NslmError(f"train.weight_decay must be non-negative, not {self.weight_decay!r}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise NslmError("train.beta1 and train.beta2 must be in [0, 1)")
        if self.optimizer not in OPTIMIZERS:
            raise NslmError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, not {self.optimizer!r}")
        if not 0 < self.adamw_lr_ratio <= 100:
            raise NslmError(f"train.adamw_lr_ratio must be a positive multiple of train.lr up to 100, "
                            f"not {self.adamw_lr_ratio!r}")
        if not 0 <= self.muon_momentum < 1:
            raise NslmError(f"train.muon_momentum must be in [0, 1), not {self.muon_momentum!r}")
        if not self.grad_clip >= 0:
            raise NslmError(f"train.grad_clip must be 0 (off) or positive, not {self.grad_clip!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise NslmError(f"train.max_minutes must be positive, not {self.max_minutes!r}")
        if self.device not in DEVICES:
            raise NslmError(f"train.device must be one of {', '.join(DEVICES)}, not {self.device!r}")
        if self.dtype not in DTYPES:
            raise NslmError(f"train.dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        return self


def parse_value(text: str):
    """A --set value: JSON when it parses (numbers, true/false/null, lists), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(sections: dict[str, dict], assignments: list[str]) -> None:
    """Apply `section.field=value` strings to the dicts in `sections` (e.g. {"model": {...}, "train": {...}})."""
    for item in assignments:
        key, sep, value = item.partition("=")
        section, dot, field = key.strip().partition(".")
        if not sep or not dot or not field:
            raise NslmError(f"--set expects section.field=value (e.g. model.n_layer=6), not {item!r}")
        if section not in sections:
            raise NslmError(f"--set {item!r}: the section must be one of {', '.join(sections)}")
        sections[section][field] = parse_value(value.strip())


def read_config_file(path: str | Path) -> dict:
    """A JSON or TOML file with optional `model` and `train` tables (and/or a `preset` name)."""
    path = Path(path)
    if not path.is_file():
        raise NslmError(f"config file {path} {what_is_there(path)}")
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except UnicodeDecodeError:
        raise NslmError(f"config file {path} is not UTF-8 text; give a JSON or TOML file") from None
    except (ValueError, RecursionError) as exc:
        raise NslmError(f"config file {path} is not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}") from None
    if not isinstance(data, dict) or set(data) - {"model", "train", "preset"}:
        raise NslmError(f"config file {path} may only hold the tables 'preset', 'model' and 'train'")
    if not all(isinstance(data.get(table, {}), dict) for table in ("model", "train")):
        raise NslmError(f"config file {path}: 'model' and 'train' must be tables of settings")
    if not isinstance(data.get("preset", ""), str):
        raise NslmError(f"config file {path}: 'preset' must be a preset name")
    return data
