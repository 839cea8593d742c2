"""The Train tab's form: check each field, count the parameters it gives, and build `nslm train` arguments.

Each check returns a reason per field (shown beside it) instead of raising, so the page can show all
problems at once and the Start button refuses while any remains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from nslm.data.tokens import DataFolder
from nslm.errors import NslmError
from nslm.gui.runs import check_name, human_count
from nslm.models import build_model, load_preset

# `nslm train --set` names of the form's training fields.
TRAIN_KEYS = {"lr": "train.lr", "batch": "train.batch_size"}
FIELDS = ("preset", "data", "width", "layers", "context", "lr", "batch", "budget", "name", "extra")


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
            f"training set: {human_count(train.get('tokens'))} tokens in {train.get('stories', '?')} stories")
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


def _field_of(message: str) -> str:
    """Which form field a ModelConfig.validate() message is about."""
    if "context_length" in message:
        return "context"
    if "n_layer" in message:
        return "layers"
    return "width"


def parse_extra(text: str) -> tuple[list[str], str | None]:
    """`section.key=value` lines (or comma-separated) -> `--set` values; a reason if one is malformed."""
    items = [part.strip() for line in (text or "").splitlines() for part in line.split(",") if part.strip()]
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key or not value.strip() or " " in key.strip():
            return [], f"{item!r} is not of the form section.key=value (e.g. train.eval_interval=100)."
    return items, None


def check_form(preset, data, width, layers, context, lr, batch, budget_kind, budget, name, extra) -> FormResult:
    """Check every field; on success `args` holds the `nslm train` arguments (without --out)."""
    result = FormResult()
    errors = result.errors
    cfg = None
    try:
        cfg = load_preset(str(preset))
    except NslmError as exc:
        errors["preset"] = str(exc)
    meta, result.data_text = data_summary(data)
    if meta is None:
        errors["data"] = result.data_text
    width_v, errors["width"] = _whole(width, 8, 4096, "Width")
    layers_v, errors["layers"] = _whole(layers, 1, 64, "Layers")
    context_v, errors["context"] = _whole(context, 8, 8192, "Context")
    lr_v, errors["lr"] = _positive(lr, 1.0, "Learning rate")
    if lr_v is None or lr_v >= 1.0:  # AdamW on these models diverges long before 1
        lr_v, errors["lr"] = None, "Learning rate must be a number above 0 and below 1 (e.g. 0.002)."
    batch_v, errors["batch"] = _whole(batch, 1, 4096, "Batch")
    if budget_kind == "tokens":
        budget_v, errors["budget"] = _whole(budget, 1, 10**13, "Token budget")
    else:
        budget_v, errors["budget"] = _positive(budget, 60 * 24 * 30, "Time budget (minutes)")
    try:
        check_name(str(name or "").strip())
    except NslmError as exc:
        errors["name"] = str(exc)
    extras, errors["extra"] = parse_extra(extra)
    for key in [k for k, v in errors.items() if v is None]:
        del errors[key]

    if cfg is not None and not {"width", "layers", "context"} & errors.keys():
        cfg.d_model, cfg.n_layer, cfg.context_length = width_v, layers_v, context_v
        if meta is not None and isinstance(meta.get("vocab_size"), int):
            cfg.vocab_size = meta["vocab_size"]
        try:
            cfg.validate()
            counts = build_model(cfg).param_counts()
            result.params_text = (f"**{human_count(counts['total'])} parameters** "
                                  f"({human_count(counts['embedding'])} embedding, "
                                  f"{human_count(counts['non_embedding'])} non-embedding)")
        except NslmError as exc:
            errors[_field_of(str(exc))] = str(exc)
    if not result.params_text:
        result.params_text = "Parameter count appears once the model fields are valid."
    if errors:
        return result
    budget_flag = ["--max-tokens", str(int(budget_v))] if budget_kind == "tokens" else ["--max-minutes", f"{budget_v:g}"]
    sets = [f"model.d_model={width_v}", f"model.n_layer={layers_v}", f"model.context_length={context_v}",
            f"{TRAIN_KEYS['lr']}={lr_v:g}", f"{TRAIN_KEYS['batch']}={batch_v}", *extras]
    result.args = ["--preset", str(preset), "--data", str(Path(str(data).strip()).expanduser()), *budget_flag]
    for item in sets:
        result.args += ["--set", item]
    return result
