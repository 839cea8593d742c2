"""`nslm sweep report`: tables (Markdown and CSV) and PNG plots of a sweep, read from its study alone (the run
folders may sit on other machines).

Every figure is the kept checkpoint's: the selection split picked it (dev where the data has one), and
validation bits per byte is what is reported. Files: `report.md`, `runs.csv` (one row per trial and seed),
`trials.csv` (one row per trial: mean and spread over seeds), `effects.csv` (each varied setting's values),
`pareto.csv` (the trials no other beats on both compute and quality), `results.json`, and the plots
`bpb_vs_params.png`, `bpb_vs_tokens.png`, `bpb_vs_time.png`, `pareto.png`, `effect-<setting>.png`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path

import optuna
from optuna.trial import TrialState

from nslm.atomic import atomic_dir
from nslm.errors import NslmError
from nslm.eval.report import jsonable
from nslm.sweep.runner import sweep_trials
from nslm.sweep.spec import SweepSpec

RUN_COLUMNS = ("trial", "seed", "params_total", "params_non_embedding", "tokens", "elapsed_s", "compute_flops",
               "select_bpb", "dev_bpb", "val_bpb")
# per-run lists and records kept in results.json only
NOT_IN_TABLES = ("curve", "folder", "selected_by", "data_meta", "train_curve")


def collect(every: list, spec: SweepSpec) -> dict:
    """{"runs": one dict per trial and seed, "trials": one per finished trial, "failed": [...]} from the study's
    trials (`sweep_trials`)."""
    runs, trials, failed = [], [], []
    retried = {t.user_attrs.get("retry_of") for t in every}
    for t in every:
        settings = t.user_attrs.get("settings", {})
        if t.state == TrialState.FAIL and t.number not in retried:
            failed.append({"trial": t.number, **settings, "error": t.user_attrs.get("error", "")})
        if t.state != TrialState.COMPLETE:
            continue
        rows = [_run_row(t.number, settings, r) for r in t.user_attrs["runs"]]
        runs += rows
        trials.append(_trial_row(t.number, settings, rows, spec))
    trials.sort(key=lambda r: r["select_bpb"])
    return {"runs": runs, "trials": trials, "failed": failed,
            "selected_by": runs[0]["selected_by"] if runs else None}


def _run_row(number: int, settings: dict, run: dict) -> dict:
    kept = run["kept"]
    row = {"trial": number, **settings, "seed": run["seed"], "params_total": run["params"]["total"],
           "params_non_embedding": run["params"]["non_embedding"], "tokens": run["tokens"],
           "elapsed_s": run["elapsed_s"], "compute_flops": run["flops_per_token"] * run["tokens"],
           "select_bpb": run["select_bpb"], "dev_bpb": kept.get("dev_bpb"), "val_bpb": kept.get("val_bpb"),
           "selected_by": run["selected_by"], "curve": run["curve"], "folder": run["folder"],
           "data_meta": run.get("data"), "train_curve": run.get("train_curve")}
    for key, value in (run.get("measures") or {}).get("summary", {}).items():
        if key != "params" and value is not None:
            row[f"eval.{key}"] = value
    return row


def _spread(values: list) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _trial_row(number: int, settings: dict, rows: list[dict], spec: SweepSpec) -> dict:
    row = {"trial": number, **settings, "seeds": len(rows)}
    for key in ("select_bpb", "val_bpb"):
        row[key], row[f"{key}_sd"] = _spread([r[key] for r in rows])
    for key in ("params_total", "params_non_embedding", "tokens", "elapsed_s", "compute_flops"):
        row[key] = statistics.fmean(r[key] for r in rows)
    for key in sorted({k for r in rows for k in r if k.startswith("eval.")}):
        row[key], row[f"{key}_sd"] = _spread([r.get(key) for r in rows])
    return row


def effects(runs: list[dict], trials: list[dict], varied: list[str]) -> list[dict]:
    """For each varied setting and value: the runs' mean validation and selection figures, the spread over
    seeds (the mean over trials of each trial's standard deviation across its seeds) and over the trials."""
    out = []
    for key in varied:
        for value in sorted({r[key] for r in trials}, key=_sort_key):
            chosen = [t for t in trials if t[key] == value]
            seed_sd = [t["val_bpb_sd"] for t in chosen if t["seeds"] > 1]
            select, _ = _spread([r["select_bpb"] for r in runs if r[key] == value])
            val, _ = _spread([r["val_bpb"] for r in runs if r[key] == value])
            _, between = _spread([t["val_bpb"] for t in chosen])
            out.append({"setting": key, "value": value, "trials": len(chosen),
                        "runs": sum(t["seeds"] for t in chosen), "select_bpb": select, "val_bpb": val,
                        "val_bpb_seed_sd": statistics.fmean(seed_sd) if seed_sd else None,
                        "val_bpb_trial_sd": between if len(chosen) > 1 else None})
    return out


def _sort_key(value):
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def pareto_front(trials: list[dict]) -> list[dict]:
    """The trials that no other trial beats with less (or equal) compute and a lower selection figure."""
    front, best = [], math.inf
    for row in sorted(trials, key=lambda r: (r["compute_flops"], r["select_bpb"])):
        if row["select_bpb"] < best:
            front.append(row)
            best = row["select_bpb"]
    return front


# ---------------------------------------------------------------- tables
def _columns(rows: list[dict], first: tuple[str, ...] | list[str]) -> list[str]:
    rest = sorted({k for r in rows for k in r if k not in first and k not in NOT_IN_TABLES})
    return [c for c in first if any(c in r for r in rows)] + rest


def to_csv(rows: list[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:,.4f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def to_markdown(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- plots
def _pyplot():
    # matplotlib is heavy and only the report needs it; Agg draws without a display.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(row: dict, varied: list[str]) -> str:
    return ", ".join(f"{k.split('.')[-1]}={Path(row[k]).name if k == 'data' else row[k]}" for k in varied)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def plot_all(data: dict, spec: SweepSpec, out: Path) -> list[tuple[str, str]]:
    """Draw every plot into `out`; returns (file name, caption) pairs."""
    plt = _pyplot()
    runs, trials, varied = data["runs"], data["trials"], spec.varied
    drawn = []

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, title in ((axes[0], "params_total", "total parameters"),
                           (axes[1], "params_non_embedding", "non-embedding parameters")):
        ax.scatter([r[key] for r in runs], [r["val_bpb"] for r in runs], s=18)
        ax.set_xscale("log")
        ax.set_xlabel(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation bits per byte")
    _save(fig, out / "bpb_vs_params.png")
    drawn.append(("bpb_vs_params.png", "Validation bits per byte against total and non-embedding parameters (one point per run)."))

    for key, name, xlabel in (("tokens", "bpb_vs_tokens.png", "training tokens"),
                              ("elapsed_s", "bpb_vs_time.png", "wall time (s)")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        colours = {t["trial"]: f"C{i % 10}" for i, t in enumerate(trials)}
        for t in trials:
            for i, r in enumerate(x for x in runs if x["trial"] == t["trial"]):
                points = [p for p in r["curve"] if p.get("val_bpb") is not None]
                ax.plot([p[key] for p in points], [p["val_bpb"] for p in points], color=colours[t["trial"]],
                        alpha=0.8, lw=1.2, label=_label(t, varied) if i == 0 and len(trials) <= 12 else None)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation bits per byte")
        ax.grid(alpha=0.3)
        if len(trials) <= 12:
            ax.legend(fontsize=7)
        _save(fig, out / name)
        drawn.append((name, f"Validation bits per byte against {xlabel} during training (one line per run)."))

    for key in varied:
        fig, ax = plt.subplots(figsize=(6, 4))
        values = sorted({r[key] for r in runs}, key=_sort_key)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        where = {v: (v if numeric else i) for i, v in enumerate(values)}
        ax.scatter([where[r[key]] for r in runs], [r["val_bpb"] for r in runs], s=14, alpha=0.6, label="runs")
        means = [_spread([r["val_bpb"] for r in runs if r[key] == v]) for v in values]
        ax.errorbar([where[v] for v in values], [m for m, _ in means], yerr=[s for _, s in means], fmt="o-",
                    color="black", capsize=4, label="mean ± sd")
        if not numeric:
            ax.set_xticks(range(len(values)), [Path(v).name if key == "data" else str(v) for v in values])
        ax.set_xlabel(key)
        ax.set_ylabel("validation bits per byte")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        name = f"effect-{key.replace('.', '_')}.png"
        _save(fig, out / name)
        drawn.append((name, f"Effect of {key}: every run, and the mean with its standard deviation."))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    front = pareto_front(trials)
    ax.scatter([t["compute_flops"] for t in trials], [t["select_bpb"] for t in trials], color="grey", s=18, label="trials")
    ax.plot([t["compute_flops"] for t in front], [t["select_bpb"] for t in front], "o-", color="C3", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("training compute (FLOPs)")
    ax.set_ylabel(f"{_split_name(data)} bits per byte (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, out / "pareto.png")
    drawn.append(("pareto.png", "Quality against compute: the trials no other beats with less compute."))
    return drawn


def _split_name(data: dict) -> str:
    return "dev" if data["selected_by"] == "dev" else "validation"


# ---------------------------------------------------------------- the report
def write_report(study: optuna.Study, spec: SweepSpec, out: str | Path, title: str = "sweep") -> dict:
    """Collect the study's results and write the report folder `out` (replaced as a whole)."""
    every = sweep_trials(study)
    data = collect(every, spec)
    if not data["trials"]:
        raise NslmError("the sweep has no finished trial yet; run nslm sweep run or worker first")
    varied = spec.varied
    data["effects"] = effects(data["runs"], data["trials"], varied)
    data["pareto"] = pareto_front(data["trials"])
    runs_cols = _columns(data["runs"], ["trial", *varied, "seed", *RUN_COLUMNS[2:]])
    trial_cols = _columns(data["trials"], ["trial", *varied, "seeds", "select_bpb", "select_bpb_sd", "val_bpb",
                                           "val_bpb_sd", "params_total", "params_non_embedding", "tokens",
                                           "elapsed_s", "compute_flops"])
    effect_cols = ["setting", "value", "trials", "runs", "select_bpb", "val_bpb", "val_bpb_seed_sd", "val_bpb_trial_sd"]
    pareto_cols = ["trial", *varied, "compute_flops", "select_bpb", "val_bpb", "params_total", "tokens", "elapsed_s"]
    with atomic_dir(out, replace=True) as tmp:
        drawn = plot_all(data, spec, tmp)
        tables = {"runs": (data["runs"], runs_cols), "trials": (data["trials"], trial_cols),
                  "effects": (data["effects"], effect_cols), "pareto": (data["pareto"], pareto_cols)}
        for name, (rows, cols) in tables.items():
            (tmp / f"{name}.csv").write_text(to_csv(rows, cols), encoding="utf-8")
        (tmp / "report.md").write_text(_markdown(title, spec, data, tables, drawn, every), encoding="utf-8")
        data["plots"] = [name for name, _ in drawn]
        (tmp / "results.json").write_text(_json(data), encoding="utf-8")
    return data


def _json(data: dict) -> str:
    return json.dumps(jsonable(data), indent=2) + "\n"


def _markdown(title: str, spec: SweepSpec, data: dict, tables: dict, drawn: list, every: list) -> str:
    split = _split_name(data)
    states = [t.state for t in every]
    held = ", ".join(f"{k}={v}" for k, v in spec.fixed.items()) or "the preset's settings"
    budget = ", ".join(f"{v} {k}" for k, v in spec.budget.items())
    parts = [f"# Sweep {title}\n",
             f"Preset {spec.preset} on {spec.data}; budget {budget} per run; seeds {', '.join(map(str, spec.seeds))}; "
             f"held equal: {held}; varied: {', '.join(spec.varied)} ({spec.mode}).\n",
             f"Trials: {states.count(TrialState.COMPLETE)} of {spec.total_trials()} finished, "
             f"{states.count(TrialState.RUNNING)} running, {len(data['failed'])} failed.\n",
             f"Checkpoints and trials are selected by {split} bits per byte (`select_bpb`); validation bits per byte "
             "(`val_bpb`) is only reported." + ("" if split == "dev" else
                                                  " The data folder has no dev split, so here validation also selects.") + "\n"]
    names = {"trials": "Trials, best first (mean and standard deviation over seeds)",
             "effects": "Each varied setting's effect", "pareto": "Pareto front: quality against compute",
             "runs": "Every run"}
    for name in ("trials", "effects", "pareto", "runs"):
        rows, cols = tables[name]
        parts.append(f"## {names[name]}\n\n{to_markdown(rows, cols)}\n(`{name}.csv`)\n")
    if data["failed"]:
        parts.append("## Failed trials\n\n" + to_markdown(data["failed"], _columns(data["failed"], ["trial"])))
    parts.append("## Plots\n")
    parts += [f"![{caption}]({name})\n\n{caption}\n" for name, caption in drawn]
    return "\n".join(parts)
