"""Read the run folders the GUI shows: which models exist, their settings, metrics and training state.

Everything here reads files only (config.json, status.json, metrics.jsonl), so every browser tab and
every restart of the app sees the same state, and a folder deleted or half-written meanwhile never
raises: it shows as missing or unreadable instead.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from nslm.atomic import read_json
from nslm.errors import NslmError
from nslm.generate import api as generate_api
from nslm.interop.foreign import detect_foreign, foreign_summary
from nslm.models import ModelConfig, model_class
from nslm.train.metrics import parse_metrics
from nslm.train.runlock import run_state

# A model name is one folder name: no separators, no "..", nothing hidden.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

RUN_PREFIX = "run:"
SHIPPED_PREFIX = "shipped:"


def shipped_dir() -> Path:
    """The folder of models shipped inside the package (generation's `pretrained_root`, resolved)."""
    return generate_api.pretrained_root().resolve()


def check_name(name: str) -> str:
    """Return `name` if it is a plain folder name, else raise NslmError."""
    if not isinstance(name, str) or not name.strip():
        raise NslmError("Give a name: letters, digits, '.', '_' and '-', starting with a letter or digit.")
    if not NAME_PATTERN.match(name) or ".." in name:
        shown = repr(name) if len(name) <= 60 else repr(name[:57]) + "…"
        raise NslmError(
            f"{shown} is not a valid name: use letters, digits, '.', '_' and '-' only, "
            "starting with a letter or digit."
        )
    return name


def child_folder(root: Path, name: str) -> Path:
    """`root/name` after checking that it cannot point outside `root` (names, `..` or symlinks)."""
    check_name(name)
    root = Path(root).resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise NslmError(f"{name!r} points outside {root}; pick a model from the list.")
    return path


def model_path(key: str, runs_dir: Path) -> Path:
    """Resolve a model key (`run:NAME` or `shipped:NAME`) to its folder, refusing path tricks."""
    if not isinstance(key, str) or not key:
        raise NslmError("No model selected: pick one in the Models tab.")
    if key.startswith(RUN_PREFIX):
        return child_folder(runs_dir, key[len(RUN_PREFIX):])
    if key.startswith(SHIPPED_PREFIX):
        return child_folder(shipped_dir(), key[len(SHIPPED_PREFIX):])
    raise NslmError(f"{key!r} is not a model of this app; pick a model from the list.")


# metrics.jsonl files already parsed, by path, with the (size, mtime) they had: pages poll every
# few seconds, and a long run's file only grows at its end.
_metrics_cache: dict[Path, tuple[tuple[int, int], list[dict]]] = {}


def read_metrics(run_dir: Path) -> list[dict]:
    """The objects of `metrics.jsonl`, skipping a line that is still being written."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        stat = path.stat()
        cached = _metrics_cache.get(path)
        if cached is not None and cached[0] == (stat.st_size, stat.st_mtime_ns):
            return cached[1]
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        _metrics_cache.pop(path, None)
        return []
    rows = parse_metrics(text)
    _metrics_cache[path] = ((stat.st_size, stat.st_mtime_ns), rows)
    return rows


def metrics_time(run_dir: Path) -> float | None:
    """When `metrics.jsonl` was last written (seconds since the epoch), or None."""
    try:
        return (Path(run_dir) / "metrics.jsonl").stat().st_mtime
    except OSError:
        return None


def read_status(run_dir: Path) -> dict:
    """The run's `status.json`, or {} when absent."""
    return read_json(Path(run_dir) / "status.json") or {}


def best_eval(metrics: list[dict]) -> dict | None:
    """The evaluation line with the lowest validation loss (the checkpoint `nslm.load` reads)."""
    evals = [m for m in metrics if m.get("event") == "eval" and isinstance(m.get("val_loss"), (int, float))]
    return min(evals, key=lambda m: m["val_loss"]) if evals else None


def as_float(text: str) -> float:
    """A table figure as a number ('—' and other non-numbers sort last)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("inf")


def human_count(n) -> str:
    """1234567 -> '1.23M'."""
    if not isinstance(n, (int, float)):
        return "—"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


def describe_arch(model: dict) -> str:
    """'transformer 4L d128 rope' / 'lstm 2L h256' from a config's model section (its class says which)."""
    try:
        cfg = ModelConfig.from_dict(model)
    except (NslmError, TypeError):  # a foreign or hand-edited config: its arch name is all there is to show
        return str(model.get("arch", "?"))
    return model_class(cfg.arch).describe(cfg)


def _date(status: dict, folder: Path) -> str:
    updated = status.get("updated")
    stamp = None
    if isinstance(updated, (int, float)):
        stamp = dt.datetime.fromtimestamp(updated)
    elif isinstance(updated, str):
        try:
            stamp = dt.datetime.fromisoformat(updated.replace("Z", "+00:00"))
        except ValueError:
            stamp = None
    if stamp is None:
        try:
            stamp = dt.datetime.fromtimestamp((folder / "config.json").stat().st_mtime)
        except OSError:
            return "—"
    return stamp.strftime("%Y-%m-%d %H:%M")


@dataclass
class ModelEntry:
    """One row of the model list."""

    key: str
    name: str
    kind: str  # "run" or "shipped"
    path: Path
    arch: str = "?"
    params: str = "—"
    tokenizer: str = "—"
    train_tokens: str = "—"
    val_bpb: str = "—"
    date: str = "—"
    state: str = "—"
    loadable: bool = False

    @property
    def label(self) -> str:
        return f"{self.name} ({'shipped' if self.kind == 'shipped' else 'run'})"

    def row(self) -> list[str]:
        return [self.name, self.kind, self.arch, self.params, self.tokenizer, self.train_tokens,
                self.val_bpb, self.date, self.state]


TABLE_HEADERS = ["model", "kind", "architecture", "params", "tokenizer", "train tokens",
                 "val bits/byte", "date", "state"]


def describe_folder(folder: Path, key: str, kind: str) -> ModelEntry:
    """Read one run-layout folder into a ModelEntry; unreadable parts show as '—' or '?'."""
    entry = ModelEntry(key=key, name=folder.name, kind=kind, path=folder)
    foreign = detect_foreign(folder)
    if foreign:  # another project's model (transformers folder, llama2.c checkpoint): nslm.load reads it too
        summary = foreign_summary(foreign)
        entry.arch, entry.params = summary["arch"], human_count(summary.get("params"))
        entry.tokenizer, entry.state, entry.loadable = summary.get("tokenizer", "—"), foreign.split(":")[0], True
        return entry
    config = read_json(folder / "config.json")
    status = read_status(folder)
    if config is None:
        entry.state = "not a run folder (no readable config.json)"
        return entry
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    params = config.get("params") if isinstance(config.get("params"), dict) else {}
    entry.arch = describe_arch(model)
    entry.params = human_count(params.get("total"))
    vocab = data.get("vocab_size") or model.get("vocab_size")
    kind_name = data.get("tokenizer_kind")
    if kind_name or vocab:
        entry.tokenizer = f"{kind_name or '?'}-{vocab}" if vocab else str(kind_name)
    metrics = read_metrics(folder)
    tokens = [m.get("tokens") for m in metrics if isinstance(m.get("tokens"), (int, float))]
    if tokens:
        entry.train_tokens = human_count(max(tokens))
    best = best_eval(metrics)
    if best and isinstance(best.get("val_bpb"), (int, float)):
        entry.val_bpb = f"{best['val_bpb']:.3f}"
    entry.date = _date(status, folder)
    entry.state = run_state(folder, status) if status.get("state") else ("shipped" if kind == "shipped" else "—")
    entry.loadable = (folder / "model.safetensors").is_file()
    return entry


def run_names(runs_dir: Path) -> list[str]:
    """The runs folder's members: plain-named subfolders that resolve inside it (the same rule as
    `child_folder`, so a symlink to a run elsewhere is neither listed nor watched nor loaded)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    names = []
    for folder in runs_dir.iterdir():
        try:
            if NAME_PATTERN.match(folder.name) and child_folder(runs_dir, folder.name).is_dir():
                names.append(folder.name)
        except (NslmError, OSError):
            continue
    return names


def list_models(runs_dir: Path) -> list[ModelEntry]:
    """Shipped models first, then the runs folder's members, newest first."""
    entries = []
    for name in generate_api.list_shipped():
        try:
            folder = child_folder(shipped_dir(), name)
        except NslmError:
            continue
        if folder.is_dir():
            entries.append(describe_folder(folder, SHIPPED_PREFIX + name, "shipped"))
    runs = []
    for name in run_names(runs_dir):
        folder = Path(runs_dir) / name
        try:
            mtime = folder.stat().st_mtime
        except OSError:
            continue
        runs.append((mtime, describe_folder(folder, RUN_PREFIX + name, "run")))
    entries += [entry for _, entry in sorted(runs, key=lambda r: r[0], reverse=True)]
    return entries
