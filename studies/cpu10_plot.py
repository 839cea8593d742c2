"""The README's 10-minute CPU figure: training loss against tokens and against wall time, and the validation
bits per byte each run ended with, for the runs `studies/cpu10.sh` made.

    python studies/cpu10_plot.py RUN_FOLDER... [--out docs/img/cpu-10-minutes.png] [--keep docs/study/cpu10] [--title T]

Each run's metrics.jsonl and config.json are copied to KEEP/NAME/ (so the plot can be redrawn without the runs);
given no run folders, the plot is redrawn from KEEP. Prints one Markdown table row per run.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def label(config: dict) -> str:
    t = config["train"]
    text = f"{t.get('optimizer', 'adamw')}, batch {t['batch_size']}, lr {t['lr']:g}"
    if t.get("adamw_lr_ratio", 1) != 1:
        text += f" (AdamW part x{t['adamw_lr_ratio']:g})"
    text += f", cooldown {t['cooldown']:g}" if t.get("cooldown") is not None else ", cosine"
    text += f" to {t['min_lr_ratio']:g}" if t.get("min_lr_ratio", 0.1) != 0.1 else ""
    # runs from before the windows were shared out over threads (and the chunked loss) have no batch_threads
    return text + (f", windows in {t['batch_threads']} threads" if t.get("batch_threads", 1) > 1 else "")


class _Nowhere:
    """Stands in for the wall-time panel when it is left out: every drawing call does nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def smooth(values: list[float], k: int = 5) -> list[float]:
    return [sum(values[max(0, i - k + 1): i + 1]) / len(values[max(0, i - k + 1): i + 1]) for i in range(len(values))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs/img/cpu-10-minutes.png"))
    ap.add_argument("--keep", type=Path, default=Path("docs/study/cpu10"))
    ap.add_argument("--title", default="transformer-1m from scratch on the 2-core CPU, 10 minutes")
    ap.add_argument("--tokens-only", action="store_true",
                    help="leave out the wall-time panel (runs that shared the machine: their times mean nothing)")
    args = ap.parse_args()
    for run in args.runs:
        (args.keep / run.name).mkdir(parents=True, exist_ok=True)
        for name in ("metrics.jsonl", "config.json", "status.json"):
            shutil.copyfile(run / name, args.keep / run.name / name)
    folders = sorted(p for p in args.keep.iterdir() if (p / "metrics.jsonl").is_file())
    if args.tokens_only:
        fig, by_tokens = plt.subplots(1, 1, figsize=(7, 4.5), dpi=100)
        by_time = _Nowhere()
    else:
        fig, (by_tokens, by_time) = plt.subplots(1, 2, figsize=(11, 4), dpi=100, sharey=True)
    print("| run | recipe | steps | tokens | tokens/s | wall time | validation bits per byte (last evaluation) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for index, folder in enumerate(folders):
        config = json.loads((folder / "config.json").read_text())
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
        train = [r for r in records if r["event"] == "train" and r.get("train_loss") is not None]
        evals = [r for r in records if r["event"] == "eval"]
        name = f"{folder.name}: {label(config)}"
        line, = by_tokens.plot([r["tokens"] / 1e6 for r in train], smooth([r["train_loss"] for r in train]), lw=1, label=name)
        by_time.plot([r["elapsed_s"] / 60 for r in train], smooth([r["train_loss"] for r in train]), lw=1, color=line.get_color())
        by_tokens.plot([r["tokens"] / 1e6 for r in evals], [r["val_loss"] for r in evals], "o", ms=4, color=line.get_color())
        by_time.plot([r["elapsed_s"] / 60 for r in evals], [r["val_loss"] for r in evals], "o", ms=4, color=line.get_color())
        last = evals[-1]
        bpb_axis_note = f"{last['val_bpb']:.3f} bpb"
        ax, x = (by_tokens, last["tokens"] / 1e6) if args.tokens_only else (by_time, last["elapsed_s"] / 60)
        ax.annotate(bpb_axis_note, (x, last["val_loss"]), fontsize=8, color=line.get_color(),
                    xytext=(4, 8 - 9 * index), textcoords="offset points")  # apart when they end close
        rate = last["tokens"] / last["elapsed_s"]
        print(f"| {folder.name} | {label(config)} | {last['step']:,} | {last['tokens'] / 1e6:.2f}M | {rate:,.0f} | "
              f"{last['elapsed_s'] / 60:.1f} min | **{last['val_bpb']:.3f}** |")
    by_tokens.set_xlabel("training tokens (millions)")
    by_time.set_xlabel("wall time, evaluations included (minutes)")
    by_tokens.set_ylabel("nats / token")
    fig.text(0.5, 0.005, "lines: training loss (mean of 5 log steps); dots: validation loss", ha="center", fontsize=8)
    by_tokens.set_ylim(top=5.0)
    for ax in (by_tokens, by_time):
        ax.grid(alpha=0.3)
    by_tokens.legend(fontsize=8)
    fig.suptitle(args.title)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)


if __name__ == "__main__":
    main()
