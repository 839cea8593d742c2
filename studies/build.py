"""Tables and plots of docs/study.md from the study's sweeps (run by `make study`, which runs the sweeps first).

    python studies/build.py [--sweeps docs/study/sweeps] [--out docs/study]

Reads each sweep's `results.json` (written by `nslm sweep report` into `sweeps/NAME/report/`; `make study`
keeps a copy of each report in `docs/study/sweeps/NAME/`, which is all this needs), and writes `docs/study/results.md` (one table per question) and
`docs/study/*.png`. A sweep that has not been run yet is left out with a line saying so. Every figure is the
kept checkpoint's (chosen on dev); validation and raw-text bits per byte are reported, never used to choose.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


SWEEPS = ("architecture", "positional", "width-depth", "tokenizers", "tokenizers-total", "data", "cleaning",
          "regularisation", "data-bound")
# the measures shown, by the key `nslm eval` gives them, with their column heading and format
MEASURES = (("eval.bits_per_byte", "val bpb (nslm eval)", "{:.4f}"), ("eval.bits_per_byte_raw", "raw-text bpb", "{:.4f}"),
            ("eval.generation.ended_rate", "ended", "{:.0%}"),
            ("eval.novelty.mean_max_cosine", "cosine to nearest", "{:.3f}"),
            ("eval.novelty.ngram5_overlap", "5-grams seen", "{:.0%}"),
            ("eval.blimp.accuracy", "BLiMP", "{:.1%}"), ("eval.hellaswag.accuracy", "HellaSwag", "{:.1%}"))


def load(sweeps: Path) -> dict:
    out = {}
    for name in SWEEPS:  # a sweep folder's report/, or a copy of it named after the sweep (docs/study/sweeps/)
        path = next((p for p in (sweeps / name / "report" / "results.json", sweeps / name / "results.json")
                     if p.is_file()), None)
        if path is not None:
            out[name] = json.loads(path.read_text(encoding="utf-8"))
    return out


def label(run: dict) -> str:
    """A run's varied setting, readable: the preset, the data folder's name, or the setting's value."""
    for key in ("preset", "shape", "tokenizer", "model.pos_encoding", "model.dropout"):
        if key in run:
            return f"dropout {run[key]}" if key == "model.dropout" else str(run[key])
    if "data" in run:
        return Path(run["data"]).name.removeprefix("ts-")
    return "?"


def as_point(run: dict, **setting) -> dict:
    """The architecture sweep's Transformer as a point of another comparison (trained the same way there)."""
    return {k: v for k, v in run.items() if k != "preset"} | setting


def mean_sd(values: list) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def cell(values: list, fmt: str) -> str:
    mean, sd = mean_sd(values)
    if mean is None:
        return "-"
    text = fmt.format(mean)
    if sd is not None:
        text += " ± " + fmt.format(sd)
    return text


def groups(runs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for run in runs:
        out.setdefault(label(run), []).append(run)
    return out


def tokens_per_s(run: dict) -> float | None:
    return run["tokens"] / run["elapsed_s"] if run.get("elapsed_s") else None


def table(runs: list[dict], extra: dict | None = None) -> str:
    """One row per varied value: seeds, parameters, the kept checkpoint's figures (mean ± sd over seeds)."""
    grouped = groups(runs)
    # a measure is shown when every row has it (a point borrowed from another sweep may lack some)
    measures = [m for m in MEASURES if all(any(r.get(m[0]) is not None for r in rs) for rs in grouped.values())]
    extra = extra or {}
    head = ["setting", "seeds", "params (total / non-emb.)", "tokens/s", "dev bpb", "val bpb"]
    head += [h for _, h, _ in measures] + list(extra)
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, rs in sorted(grouped.items(), key=lambda kv: mean_sd([r["dev_bpb"] for r in kv[1]])[0]):
        row = [name, str(len(rs)), f"{rs[0]['params_total']:,} / {rs[0]['params_non_embedding']:,}",
               cell([tokens_per_s(r) for r in rs], "{:,.0f}"), cell([r["dev_bpb"] for r in rs], "{:.4f}"),
               cell([r["val_bpb"] for r in rs], "{:.4f}")]
        row += [cell([r.get(key) for r in rs], fmt) for key, _, fmt in measures]
        row += [fn(rs) for fn in extra.values()]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def save(fig, ax, path: Path, legend: bool = True) -> None:
    """Grid, legend, and the PNG written: the last lines of every plot here."""
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves(runs: list[dict], path: Path, x: str, title: str, xlabel: str) -> None:
    """Dev bits per byte along training, one colour per varied value, one line per seed."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, rs) in enumerate(sorted(groups(runs).items())):
        for j, run in enumerate(sorted(rs, key=lambda r: r["seed"])):
            points = [(p[x], p["dev_bpb"]) for p in run["curve"] if p.get("dev_bpb")]
            ax.plot(*zip(*points), color=colours[i % len(colours)], ls="-" if j == 0 else "--", lw=1.3,
                    label=name if j == 0 else None)
    ax.set(xlabel=xlabel, ylabel="dev bits per byte", title=title)
    low = min(p["dev_bpb"] for r in runs for p in r["curve"] if p.get("dev_bpb"))
    ax.set_ylim(low - 0.05, low + 1.0)
    save(fig, ax, path)


def train_tokens(run: dict) -> int:
    return run["data_meta"]["train"]["tokens"]


def overfitting(runs: list[dict], path: Path, stories: str) -> None:
    """Training loss against dev loss along the passes over a small data folder (the data-bound regime)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, rs) in enumerate(sorted(groups(runs).items())):
        run = rs[0]
        per_pass = train_tokens(run)
        train = [(p["tokens"] / per_pass, p["train_loss"]) for p in run["train_curve"]]
        dev = [(p["tokens"] / per_pass, p["dev_loss"]) for p in run["curve"] if p.get("dev_loss")]
        ax.plot(*zip(*train), color=colours[i], lw=0.8, alpha=0.6)
        ax.plot(*zip(*dev), color=colours[i], lw=1.8, marker="o", ms=3, label=f"{name}: dev (thin: train)")
    ax.set(xlabel=f"passes over the {stories} training stories", ylabel="loss (nats/token)",
           title="The data-bound regime: train and dev loss")
    ax.set_ylim(0.5, 5.0)
    save(fig, ax, path)


def scatter(points: list[tuple[float, float, str]], path: Path, xlabel: str, title: str, logx: bool = False) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for x, y, name in points:
        ax.scatter([x], [y], s=25)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel="validation bits per byte", title=title)
    save(fig, ax, path, legend=False)


def build(sweeps: Path, out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    results = load(sweeps)
    runs = {name: res["runs"] for name, res in results.items()}
    for rs in runs.values():
        for r in rs:
            r["dev_bpb"] = r["dev_bpb"] if r.get("dev_bpb") is not None else r["select_bpb"]
    base = [r for r in runs.get("architecture", []) if r.get("preset") == "transformer-1m"]
    doc = ["# Study results (generated by studies/build.py; docs/study.md says what they show)", "",
           "tokens/s is each run's own rate on the shared 2-core machine, two runs at once and evaluation "
           "included: not a benchmark (docs/study.md, question 1, has idle per-token speeds).", ""]
    missing = [s for s in SWEEPS if s not in results]
    if missing:
        doc += [f"Not run yet: {', '.join(missing)}.", ""]

    if "architecture" in runs:
        rs = runs["architecture"]
        doc += ["## 1. Transformer, LSTM and GRU", "", table(rs), ""]
        curves(rs, out / "q1-tokens.png", "tokens", "Q1: dev bits per byte against training tokens", "training tokens")
        curves(rs, out / "q1-time.png", "elapsed_s", "Q1: against wall time (1 thread each, 2 runs at once)",
               "seconds of training (evaluation included)")
    if "positional" in runs:
        rs = runs["positional"] + [as_point(r, **{"model.pos_encoding": "rope"}) for r in base]
        doc += ["## 4. Positional encodings", "", table(rs), ""]
        curves(rs, out / "q4-positions.png", "tokens", "Q4: positional encodings", "training tokens")
    if "width-depth" in runs:
        rs = runs["width-depth"]
        doc += ["## 3. Width against depth", "", table(rs), ""]
        curves(rs, out / "q3-shape.png", "tokens", "Q3: width against depth at ~1.05M parameters", "training tokens")
    if "tokenizers" in runs:
        rs = runs["tokenizers"] + [as_point(r, data="data/ts-bpe4096") for r in base if r["seed"] == 1]
        per_token = {label(r): r["data_meta"]["valid"]["bytes"] / r["data_meta"]["valid"]["tokens"] for r in rs}
        extra = {"bytes/token (valid)": lambda g: f"{per_token[label(g[0])]:.2f}",
                 "training bytes seen": lambda g: f"{g[0]['tokens'] * per_token[label(g[0])] / 1e6:.1f}M"}
        doc += ["## 2. Tokenizers (equal non-embedding size, 800K tokens each)", "", table(rs, extra), ""]
        scatter([(r["params_total"], r["val_bpb"], label(r)) for r in rs], out / "q2-tokenizers.png",
                "total parameters (the embedding grows with the vocabulary)", "Q2: tokenizers at one model shape")
    if "tokenizers-total" in runs:
        rs = runs["tokenizers-total"] + [as_point(r, tokenizer="bpe4096-d128") for r in base if r["seed"] == 1]
        doc += ["## 2b. Tokenizers at equal total size (about 1.05-1.09M parameters, 800K tokens each)", "",
                table(rs), ""]
    if "data" in runs:
        rs = runs["data"] + [as_point(r, data="data/ts-all13K") for r in base if r["seed"] == 1]
        extra = {"training stories": lambda g: f"{g[0]['data_meta']['train']['stories']:,}",
                 "passes": lambda g: f"{g[0]['tokens'] / train_tokens(g[0]):.1f}"}
        doc += ["## 5a. How much data (800K tokens each)", "", table(rs, extra), ""]
        scatter([(r["data_meta"]["train"]["stories"], r["val_bpb"], label(r)) for r in rs], out / "q5-data.png",
                "training stories (log scale)", "Q5: data at fixed parameters and tokens", logx=True)
    if "cleaning" in runs:
        rs = runs["cleaning"]
        doc += ["## 5b. Cleaning and the vocabulary restriction (800K tokens each)", "",
                table(rs, {"training stories": lambda g: f"{g[0]['data_meta']['train']['stories']:,}"}), ""]
    if "regularisation" in runs:
        small = [r for r in runs.get("data", []) if label(r) == "share0.077"]
        rs = runs["regularisation"] + [dict(r, **{"model.dropout": 0.0}) for r in small]
        doc += ["## 6a. Dropout on 1K stories (800K tokens: 4 passes)", "", table(rs), ""]
        overfitting(rs, out / "q6-1k.png", "1K")
    if "data-bound" in runs:
        rs = runs["data-bound"]
        doc += ["## 6b. Dropout on 250 stories (800K tokens: 16 passes)", "", table(rs), ""]
        overfitting(rs, out / "q6-250.png", "250")
    text = "\n".join(doc) + "\n"
    (out / "results.md").write_text(text, encoding="utf-8")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", type=Path, default=Path("docs/study/sweeps"))
    parser.add_argument("--out", type=Path, default=Path("docs/study"))
    args = parser.parse_args()
    print(build(args.sweeps, args.out))


if __name__ == "__main__":
    main()
