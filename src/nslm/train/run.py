"""Setting up a run folder (new or resumed) and running the trainer in it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from nslm import __version__
from nslm.atomic import atomic_write_json
from nslm.data.tokens import DataFolder
from nslm.device import is_main_process, pick_device
from nslm.errors import NslmError
from nslm.models import ModelConfig, build_model, load_preset, preset_train_defaults
from nslm.models.config import gigabytes, physical_memory
from nslm.tokenizer.core import tokenizer_file_sha256
from nslm.train.checkpoint import has_checkpoint
from nslm.train.config import TrainConfig, apply_overrides, read_config_file
from nslm.train.loop import Trainer

DEFAULT_PRESET = "transformer-1m"


def _checked_data(data_dir: str | Path) -> DataFolder:
    """The data folder, with its tokenizer and every token file checked before any run folder is made: sizes
    against meta.json, every id inside the vocabulary, and at least 2 tokens in each split that is evaluated."""
    folder = DataFolder(data_dir)
    folder.check_tokenizer_file()
    for split in folder.splits:
        tokens = len(folder.split(split))
        if split != "train" and tokens < 2:  # training evaluates on valid (and dev): a window needs 2 tokens
            name = "validation" if split == "valid" else split
            raise NslmError(f"the {name} split of the data folder {folder.path} has {tokens} "
                            f"token{'s' if tokens != 1 else ''}, fewer than the 2 an evaluation needs; prepare "
                            f"the data with more {name} stories")
    return folder


def _data_record(folder: DataFolder) -> dict:
    """config.json's `data`: the header and where the folder is."""
    return dict(folder.meta, path=str(folder.path.resolve()))


def prepare_run(out: str | Path | None = None, data: str | Path | None = None, preset: str | None = None,
                config_file: str | Path | None = None, overrides: list[str] | None = None,
                train_options: dict | None = None, resume: str | Path | None = None) -> tuple[dict, Path]:
    """Resolve every setting of a run and (on the main process) create or update its folder.

    `train_options` are TrainConfig fields from dedicated flags (limits, device, dtype, compile).
    Returns (config.json's dict, run folder).
    """
    overrides = list(overrides or [])
    train_options = {k: v for k, v in (train_options or {}).items() if v is not None}
    if resume:
        return _prepare_resume(Path(resume), data, overrides, train_options, preset, config_file)
    if out is None or data is None:
        raise NslmError("nslm train needs --data DIR and --out RUN (or --resume RUN)")
    run_config = resolve_run_config(data, preset, config_file, overrides, train_options)
    run_dir = Path(out)
    if is_main_process():
        _create_run_folder(run_dir, run_config)
    return run_config, run_dir


def resolve_run_config(data: str | Path, preset: str | None = None, config_file: str | Path | None = None,
                       overrides: list[str] | None = None, train_options: dict | None = None) -> dict:
    """config.json's dict of a new run: every setting resolved and checked (data folder, model, training, memory),
    nothing written. `prepare_run` and the sweep's spec check both go through it."""
    overrides = list(overrides or [])
    train_options = {k: v for k, v in (train_options or {}).items() if v is not None}
    file_cfg = read_config_file(config_file) if config_file else {}
    preset = preset or file_cfg.get("preset") or DEFAULT_PRESET
    model = load_preset(preset).to_dict()
    model.update(file_cfg.get("model", {}))
    train = TrainConfig().to_dict()
    train.update(preset_train_defaults(preset))
    train.update(file_cfg.get("train", {}))
    train.update(train_options)
    apply_overrides({"model": model, "train": train}, overrides)
    folder = _checked_data(data)
    model["vocab_size"] = folder.vocab_size  # the data decides the vocabulary
    mcfg = ModelConfig.from_dict(model)
    train_tokens = len(folder.split("train"))
    if mcfg.context_length + 1 > train_tokens:
        raise NslmError(f"the training split of {data} has {train_tokens} tokens, fewer than one window "
                        f"of {mcfg.context_length + 1}; lower model.context_length or use more data")
    tcfg = checked_train_config(train, mcfg)  # an absent GPU or too little memory: refused before any folder is made
    return {
        "preset": preset,
        "model": mcfg.to_dict(),
        "train": tcfg.to_dict(),
        "data": _data_record(folder),
        "tokenizer_sha256": folder.tokenizer_sha256,
        "nslm_version": __version__,
        "params": build_model(mcfg).param_counts(),
    }


def device_memory(device: torch.device) -> int | None:
    """Bytes of memory of `device` (RAM for the CPU), or None where unknown."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return physical_memory() if device.type == "cpu" else None


def checked_train_config(train: dict, mcfg: ModelConfig) -> TrainConfig:
    """The TrainConfig of `train`, its batch size resolved for the device it will run on; a run whose weights,
    optimizer state and activations cannot fit in that device's memory is refused (as is an absent GPU)."""
    tcfg = TrainConfig.from_dict(train)
    device = pick_device(tcfg.device)
    tcfg = tcfg.for_device(device, mcfg.dropout)
    need, have = mcfg.training_memory(tcfg.batch_size), device_memory(device)
    if have and need > have:
        raise NslmError(f"training this model at train.batch_size {tcfg.batch_size} needs about {gigabytes(need)} "
                        f"(weights, optimizer state and activations), more than the {gigabytes(have)} of {device.type}; "
                        "lower train.batch_size or model.context_length, or choose a smaller model")
    return tcfg


def _create_run_folder(run_dir: Path, run_config: dict) -> None:
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        if (run_dir / "config.json").exists():
            if not has_checkpoint(run_dir):
                raise NslmError(f"{run_dir} already holds a run that has no checkpoint to resume from (it failed or "
                                "stopped before its first one, or is starting now); choose another --out, or "
                                "delete that folder once no nslm train uses it")
            raise NslmError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out")
        raise NslmError(f"{run_dir} exists and is not empty; choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    data_path = Path(run_config["data"]["path"])
    for name in ("tokenizer.json", "casing.json"):
        if (data_path / name).is_file():
            shutil.copyfile(data_path / name, run_dir / f".{name}.tmp")
            os.replace(run_dir / f".{name}.tmp", run_dir / name)
    atomic_write_json(run_dir / "config.json", run_config)


def read_run_config(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    if not path.is_file():
        raise NslmError(f"{run_dir} is not a run folder (no config.json); start a run with nslm train --out {run_dir}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError):  # ValueError covers bad JSON and bytes that are not UTF-8
        raise NslmError(f"{path} is corrupt (not JSON)") from None
    tables = ("model", "train", "data")
    if not isinstance(config, dict) or not all(isinstance(config.get(t), dict) for t in tables) \
            or not isinstance(config["data"].get("path"), str) or not isinstance(config.get("tokenizer_sha256"), str):
        raise NslmError(f"{path} is corrupt: it needs the tables model, train and data (with its path) and "
                        "tokenizer_sha256, as nslm train writes them")
    return config


def _prepare_resume(run_dir: Path, data, overrides, train_options, preset, config_file) -> tuple[dict, Path]:
    if preset or config_file:
        raise NslmError("--resume continues a run with its own settings; drop --preset and --config")
    run_config = read_run_config(run_dir)
    folder = _checked_data(data or run_config["data"]["path"])
    if not folder.matches(run_config["tokenizer_sha256"]):
        raise NslmError(f"the data folder {folder.path.resolve()} was made with another tokenizer than the run "
                        f"{run_dir}; resume with the run's own data folder (--data)")
    if (run_dir / "tokenizer.json").is_file() and tokenizer_file_sha256(run_dir / "tokenizer.json") != run_config["tokenizer_sha256"]:
        raise NslmError(f"{run_dir}/tokenizer.json does not match the run's config.json; the run folder was altered")
    train = dict(run_config["train"], stop_after_steps=None)
    if any(k in train_options for k in ("max_steps", "max_tokens", "max_minutes")):
        train.update(max_steps=None, max_tokens=None, max_minutes=None)
    train.update(train_options)
    model = dict(run_config["model"])
    apply_overrides({"model": model, "train": train}, overrides)
    if model != run_config["model"]:
        raise NslmError("--resume cannot change model settings; start a new run for another model")
    # config.json is rewritten by the trainer once the checkpoint has loaded, so a failed resume changes nothing
    tcfg = checked_train_config(train, ModelConfig.from_dict(model))
    return dict(run_config, train=tcfg.to_dict(), data=_data_record(folder)), run_dir


def train_run(run_config: dict, run_dir: Path, resume: bool = False) -> dict:
    """Train in `run_dir` as `run_config` says; returns the final status (state, step, best_val_loss...)."""
    return Trainer(run_config, run_dir, resume).run()
