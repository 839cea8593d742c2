"""Models: ModelConfig, the architecture registry, the Transformer and the LSTM/GRU, and named presets
(src/nslm/presets/*.json)."""

from __future__ import annotations

import json
from importlib import resources

import torch.nn as nn

from nslm.errors import NslmError
from nslm.models.base import TiedLM
from nslm.models.config import ModelConfig
from nslm.models.registry import ARCHITECTURES, model_class, register_arch, unregister_arch
# importing a model module registers its architectures, in this order (the order error messages list them)
from nslm.models.transformer import Transformer  # noqa: I001
from nslm.models.rnn import RNNLM


def build_model(cfg: ModelConfig) -> nn.Module:
    """A freshly initialised model of the class registered for `cfg.arch`."""
    cfg.validate()
    return model_class(cfg.arch)(cfg)


def _presets_dir():
    return resources.files("nslm") / "presets"


def list_presets() -> list[str]:
    """Names of the shipped presets, sorted."""
    return sorted(p.name[: -len(".json")] for p in _presets_dir().iterdir() if p.name.endswith(".json"))


def load_preset(name: str) -> ModelConfig:
    """The ModelConfig of preset `name`; an unknown name is an NslmError listing the known ones."""
    path = _presets_dir() / f"{name}.json"
    if not path.is_file():
        raise NslmError(f"unknown preset {name!r}; choose one of: {', '.join(list_presets())}")
    data = json.loads(path.read_text(encoding="utf-8"))
    for key in ("description", "train"):
        data.pop(key, None)
    return ModelConfig.from_dict(data)


def _preset_data(name: str) -> dict:
    load_preset(name)  # the same check and message for an unknown name
    return json.loads((_presets_dir() / f"{name}.json").read_text(encoding="utf-8"))


def preset_description(name: str) -> str:
    """The one-line description stored with a preset."""
    return _preset_data(name).get("description", "")


def preset_train_defaults(name: str) -> dict:
    """Training settings a preset recommends (its optional `train` table, e.g. a learning rate)."""
    return dict(_preset_data(name).get("train", {}))


__all__ = ["ARCHITECTURES", "ModelConfig", "RNNLM", "TiedLM", "Transformer", "build_model", "list_presets", "load_preset",
           "model_class", "preset_description", "preset_train_defaults", "register_arch", "unregister_arch"]
