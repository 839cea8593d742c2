"""Summarise the GPU runs of docs/study.md section 8: each run folder's config and evaluation curve into
docs/study/gpu/runs.json, a dev-loss plot into docs/study/q8-gpu.png, and a markdown table on stdout.

    python studies/gpu_summary.py RUN_FOLDER... [--out docs/study]

The run folders are what `studies/gpu.sh` leaves under gpu/runs* (weights not needed: only config.json and
metrics.jsonl are read); the JSON keeps every evaluation, so the table and plot can be rebuilt from it alone
with `--from-json docs/study/gpu/runs.json`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_run(folder: Path) -> dict:
    config = json.loads((folder / "config.json").read_text())
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evals = [r for r in rows if r.get("event") == "eval"]
    train = [r for r in rows if r.get("event") == "train"]
    rates = sorted(r["tokens_per_s"] for r in train)
    return {
        "name": folder.name, "preset": config["preset"], "arch": config["model"]["arch"],
        "dropout": config["model"]["dropout"], "batch_size": config["train"]["batch_size"], "lr": config["train"]["lr"],
        "params": config["params"]["total"], "train_tokens": config["data"]["train"]["tokens"],
        "median_tokens_per_s": rates[len(rates) // 2] if rates else None,
        "last_train_loss": train[-1]["train_loss"] if train else None,
        "evals": [{k: r.get(k) for k in ("step", "tokens", "elapsed_s", "dev_loss", "val_loss", "val_bpb")} for r in evals],
    }


def table(runs: list[dict]) -> str:
    lines = ["| run | preset | batch | lr | dropout | tokens | passes | dev loss (kept) | kept at | val bpb (windows) | train loss at the end | tokens/s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for run in runs:
        best = min(run["evals"], key=lambda e: e["dev_loss"])
        last = run["evals"][-1]
        lines.append(f"| {run['name']} | {run['preset']} | {run['batch_size']} | {run['lr']:g} | {run['dropout']:g} | "
                     f"{last['tokens'] / 1e6:.1f}M | {last['tokens'] / run['train_tokens']:.0f} | {best['dev_loss']:.4f} | "
                     f"{best['tokens'] / 1e6:.1f}M | {best['val_bpb']:.4f} | {run['last_train_loss']:.3f} | "
                     f"{run['median_tokens_per_s']:,.0f} |")
    return "\n".join(lines)


def plot(runs: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, arch in zip(axes, (("transformer",), ("gru", "lstm"))):
        for run in runs:
            if run["arch"] not in arch:
                continue
            xs = [e["tokens"] / 1e6 for e in run["evals"]]
            ys = [e["dev_loss"] for e in run["evals"]]
            ax.plot(xs, ys, marker=".", label=f"{run['name']} (batch {run['batch_size']}, dropout {run['dropout']:g})")
        ax.set_xlabel("training tokens (millions)")
        ax.set_ylabel("dev loss (nats per token)")
        ax.set_title("Transformer" if arch == ("transformer",) else "GRU and LSTM")
        ax.set_ylim(2.0, 2.7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    per_pass = sorted({run["train_tokens"] for run in runs})
    fig.suptitle(f"1M-parameter models on one H200, dev loss along training "
                 f"({'/'.join(f'{t / 1e6:.2f}M' for t in per_pass)} training tokens per pass)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", type=Path)
    p.add_argument("--from-json", type=Path)
    p.add_argument("--out", type=Path, default=Path("docs/study"))
    args = p.parse_args()
    (args.out / "gpu").mkdir(parents=True, exist_ok=True)
    if args.from_json:
        runs = json.loads(args.from_json.read_text())["runs"]
    else:
        runs = [read_run(folder) for folder in args.runs]
        (args.out / "gpu" / "runs.json").write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    plot(runs, args.out / "q8-gpu.png")
    print(table(runs))


if __name__ == "__main__":
    main()
