"""The Train tab's form: check each field, count the parameters it gives, and build `nslm train` arguments.

Each check returns a reason per field (shown beside it) instead of raising, so the page can show all
problems at once and the Start button refuses while any remains.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nslm.data.tokens import DataFolder
from nslm.errors import NslmError
from nslm.gui.runs import check_name, human_count
from nslm.models import ModelConfig, build_model, load_preset
from nslm.train.config import TrainConfig

# `nslm train --set` names of the form's fields.
TRAIN_KEYS = {"lr": "train.lr", "batch": "train.batch_size"}
MODEL_KEYS = {"width": "d_model", "layers": "n_layer", "context": "context_length"}

# Validation points a run from the page draws, whatever its length, so that a short run has a curve too.
EVALUATIONS = 10
# A time budget's steps are counted at transformer-1m's speed on a 2-core CPU (the slowest machine the app is
# made for): a faster machine takes more steps and so evaluates more often, at the same share of its time.
CPU_TOKENS_PER_S = 5000


@dataclass
class TrainForm:
    """The Train tab's fields by name, as the page sends them."""

    preset: str = "transformer-1m"
    data: str = ""
    width: float = 128
    layers: float = 4
    context: float = 256
    lr: float = 2e-3
    batch: float = 32
    budget_kind: str = "minutes"
    budget: float = 10
    name: str = ""
    extra: str = ""


FORM_FIELDS = tuple(f.name for f in dataclasses.fields(TrainForm))
# The fields that show a reason under them (the budget's unit cannot be wrong).
FIELDS = tuple(name for name in FORM_FIELDS if name != "budget_kind")


@dataclass
class FormResult:
    """What the form's values amount to: reasons per field, the parameter count, the command."""

    errors: dict[str, str] = field(default_factory=dict)
    params_text: str = ""
    data_text: str = ""
    args: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def data_summary(data_dir: str) -> tuple[dict | None, str]:
    """(meta.json, one line about its tokenizer and size) of a data folder, or (None, reason)."""
    if not data_dir or not str(data_dir).strip():
        return None, "Give the data folder made by `nslm data prepare`."
    folder = Path(str(data_dir).strip()).expanduser()
    if not folder.is_dir():
        return None, f"{folder} does not exist; make it with `nslm data prepare --out {folder}`."
    try:
        meta = DataFolder(folder).meta
    except NslmError:
        return None, f"{folder} has no readable meta.json: is it a folder made by `nslm data prepare`?"
    train = meta.get("train") if isinstance(meta.get("train"), dict) else {}
    text = (f"tokenizer: {meta.get('tokenizer_kind', '?')}, vocabulary {meta.get('vocab_size', '?')}; "
            f"training set: {human_count(train.get('tokens'))} tokens in {_count(train.get('stories'))} stories")
    return meta, text


def _whole(value, low: int, high: int, what: str) -> tuple[int | None, str | None]:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None, f"{what} must be a whole number."
    if not math.isfinite(number) or number != int(number):
        return None, f"{what} must be a whole number."
    if not low <= number <= high:
        return None, f"{what} must be between {low} and {high}."
    return int(number), None


def _positive(value, high: float, what: str) -> tuple[float | None, str | None]:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None, f"{what} must be a number."
    if not math.isfinite(number) or number <= 0 or number > high:
        return None, f"{what} must be above 0 and at most {high:g}."
    return number, None


def model_errors(cfg: ModelConfig, shape: dict[str, int]) -> dict[str, str]:
    """The model's own check (`ModelConfig.validate`) per form field: each field's value is tried alone
    on the preset, so a reason lands under the field that causes it; a clash that only the fields
    together make is shown under the width."""
    errors = {}
    for name, value in shape.items():
        try:
            dataclasses.replace(cfg, **{MODEL_KEYS[name]: value}).validate()
        except NslmError as exc:
            errors[name] = str(exc)
    if not errors:
        try:
            dataclasses.replace(cfg, **{MODEL_KEYS[n]: v for n, v in shape.items()}).validate()
        except NslmError as exc:
            errors["width"] = str(exc)
    return errors


def parse_extra(text: str) -> tuple[list[str], str | None]:
    """`section.key=value` lines (or comma-separated) -> `--set` values; a reason if one is malformed."""
    items = [part.strip() for line in (text or "").splitlines() for part in line.split(",") if part.strip()]
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key or not value.strip() or " " in key.strip():
            return [], f"{item!r} is not of the form section.key=value (e.g. train.eval_interval=100)."
    return items, None


def _field_errors(form: TrainForm) -> tuple[dict, dict]:
    """(checked values, reasons) of every field taken alone."""
    values, errors = {}, {}
    values["width"], errors["width"] = _whole(form.width, 8, 4096, "Width")
    values["layers"], errors["layers"] = _whole(form.layers, 1, 64, "Layers")
    values["context"], errors["context"] = _whole(form.context, 8, 8192, "Context")
    values["lr"], errors["lr"] = _positive(form.lr, 1.0, "Learning rate")
    if values["lr"] is None or values["lr"] >= 1.0:  # AdamW on these models diverges long before 1
        values["lr"], errors["lr"] = None, "Learning rate must be a number above 0 and below 1 (e.g. 0.002)."
    values["batch"], errors["batch"] = _whole(form.batch, 1, 4096, "Batch")
    if form.budget_kind == "tokens":
        values["budget"], errors["budget"] = _whole(form.budget, 1, 10**13, "Token budget")
    else:
        values["budget"], errors["budget"] = _positive(form.budget, 60 * 24 * 30, "Time budget (minutes)")
    try:
        check_name(str(form.name or "").strip())
    except NslmError as exc:
        errors["name"] = str(exc)
    values["extra"], errors["extra"] = parse_extra(form.extra)
    return values, {k: v for k, v in errors.items() if v}


def _count(value) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "?"


def _param_text(cfg: ModelConfig) -> str:
    # counted from the shape (the form is checked on every edit; building a model of the largest shapes the
    # form takes would cost seconds and gigabytes); an architecture the config cannot count is built without
    # storage, on the meta device
    counts = cfg.param_counts()
    if counts is None:
        with torch.device("meta"):
            counts = build_model(cfg).param_counts()
    return (f"**{human_count(counts['total'])} parameters** ({human_count(counts['embedding'])} embedding, "
            f"{human_count(counts['non_embedding'])} non-embedding)")


def check_form(form: TrainForm) -> FormResult:
    """Check every field; on success `args` holds the `nslm train` arguments (without --out)."""
    result = FormResult()
    cfg = None
    try:
        cfg = load_preset(str(form.preset))
    except NslmError as exc:
        result.errors["preset"] = str(exc)
    meta, result.data_text = data_summary(form.data)
    if meta is None:
        result.errors["data"] = result.data_text
    values, errors = _field_errors(form)
    result.errors.update(errors)
    if cfg is not None and not set(MODEL_KEYS) & result.errors.keys():
        if meta is not None and isinstance(meta.get("vocab_size"), int):
            cfg.vocab_size = meta["vocab_size"]
        shape = {name: values[name] for name in MODEL_KEYS}
        result.errors.update(model_errors(cfg, shape))
        if not result.errors.keys() & set(MODEL_KEYS):
            result.params_text = _param_text(dataclasses.replace(cfg, **{MODEL_KEYS[n]: v for n, v in shape.items()}))
    if not result.params_text:
        result.params_text = "Parameter count appears once the model fields are valid."
    if not result.errors:
        result.args = _train_args(form, values)
    return result


def evaluation_settings(budget_kind: str, budget: float, batch: int, context: int) -> list[str]:
    """`--set` values for how often a run of this budget evaluates and logs: about EVALUATIONS validation
    points (never rarer than the training default), each on at most half the tokens trained between two,
    so that evaluating costs about a sixth of the time (a forward pass is a third of a training step)."""
    defaults = TrainConfig()
    tokens_per_step = batch * context
    tokens = budget if budget_kind == "tokens" else budget * 60 * CPU_TOKENS_PER_S
    steps = tokens / tokens_per_step
    interval = int(min(max(steps // EVALUATIONS, 1), defaults.eval_interval))
    eval_tokens = int(min(max(interval * tokens_per_step // 2, tokens_per_step), defaults.eval_tokens))
    log_interval = int(min(max(steps // 100, 1), defaults.log_interval))
    return [f"train.eval_interval={interval}", f"train.eval_tokens={eval_tokens}", f"train.log_interval={log_interval}"]


def _train_args(form: TrainForm, values: dict) -> list[str]:
    budget = values["budget"]
    budget_flag = ["--max-tokens", str(int(budget))] if form.budget_kind == "tokens" else ["--max-minutes", f"{budget:g}"]
    # The extra settings come last, so a value typed there wins over the form's and the budget's.
    sets = [*(f"model.{key}={values[name]}" for name, key in MODEL_KEYS.items()),
            f"{TRAIN_KEYS['lr']}={values['lr']:g}", f"{TRAIN_KEYS['batch']}={values['batch']}",
            *evaluation_settings(form.budget_kind, budget, values["batch"], values["context"]), *values["extra"]]
    args = ["--preset", str(form.preset), "--data", str(Path(str(form.data).strip()).expanduser()), *budget_flag]
    for item in sets:
        args += ["--set", item]
    return args
