"""The PNG plots of an evaluation report: loss curves, bits per byte against size, novelty, BLiMP phenomena."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from nslm.atomic import atomic_write_bytes
from nslm.train.metrics import read_metrics


def _pyplot():
    # matplotlib is heavy and only the report needs it; Agg draws without a display.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())
    _pyplot().close(fig)


def loss_curves(models: dict, path: Path) -> bool:
    """Training and validation loss of each run from its metrics.jsonl; False when no run has any."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    drawn = False
    for name, res in models.items():
        metrics = read_metrics(res.get("folder") or res["run"])
        train = [(m["tokens"], m["train_loss"]) for m in metrics if m.get("event") == "train" and m.get("train_loss") is not None]
        val = [(m["tokens"], m["val_loss"]) for m in metrics if m.get("event") == "eval" and m.get("val_loss") is not None]
        color = None
        if train:
            line, = ax.plot(*zip(*train), lw=1, alpha=0.6, label=f"{name} train")
            color = line.get_color()
        if val:
            ax.plot(*zip(*val), "o-", color=color, label=f"{name} validation")
        drawn = drawn or bool(train or val)
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (nats / token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def bpb_vs_params(models: dict, path: Path) -> bool:
    """Validation bits per byte against parameter count; False when no model has both."""
    import matplotlib.ticker

    points = [(res["summary"]["params"], res["summary"]["bits_per_byte"], name) for name, res in models.items()
              if res["summary"].get("params") and res["summary"].get("bits_per_byte")]
    if not points:
        return False
    fig, ax = _pyplot().subplots(figsize=(6, 4))
    for p, b, name in points:
        ax.scatter([p], [b], s=40)
        ax.annotate(name, (p, b), textcoords="offset points", xytext=(5, 5), fontsize=8)
    sizes = [p for p, _, _ in points]
    if max(sizes) > 10 * min(sizes):
        ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1e6:.2f}M"))
    ax.set_xlabel("parameters")
    ax.set_ylabel("validation bits per byte")
    ax.grid(alpha=0.3)
    _save(fig, path)
    return True


def novelty_hist(models: dict, path: Path) -> bool:
    """Distributions of nearest-story cosine and 4-gram overlap over the generated stories."""
    with_novelty = {n: r["novelty"] for n, r in models.items() if r.get("novelty")}
    if not with_novelty:
        return False
    fig, axes = _pyplot().subplots(1, 2, figsize=(10, 4))
    bins = np.linspace(0, 1, 21)
    for name, nov in with_novelty.items():
        axes[0].hist(nov["cosines"], bins=bins, alpha=0.5, label=name)
        axes[1].hist([x for x in nov["ngram4_overlaps"] if x is not None], bins=bins, alpha=0.5, label=name)
    axes[0].set_xlabel("cosine similarity to the nearest training story")
    axes[1].set_xlabel("share of the completion's 4-grams seen in training")
    for ax in axes:
        ax.set_ylabel("stories")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    _save(fig, path)
    return True


def blimp_phenomena(models: dict, path: Path) -> bool:
    """BLiMP accuracy per phenomenon, one bar per model, with chance marked."""
    with_blimp = {n: r["blimp"]["by_phenomenon"] for n, r in models.items() if r.get("blimp")}
    if not with_blimp:
        return False
    terms = sorted({t for d in with_blimp.values() for t in d})
    fig, ax = _pyplot().subplots(figsize=(8, 0.45 * len(terms) + 1.5))
    height = 0.8 / len(with_blimp)
    for k, (name, by) in enumerate(with_blimp.items()):
        ax.barh(np.arange(len(terms)) + k * height, [by.get(t, 0) for t in terms], height=height, label=name)
    ax.axvline(0.5, color="grey", ls="--", lw=1, label="chance")
    ax.set_yticks(np.arange(len(terms)) + 0.4 - height / 2)
    ax.set_yticklabels(terms, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy")
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


PLOTS = (
    ("loss_curves.png", "Training and validation loss from each run's metrics.jsonl", loss_curves),
    ("bpb_vs_params.png", "Validation bits per byte against model size", bpb_vs_params),
    ("novelty_hist.png", "Novelty: distributions over the generated stories", novelty_hist),
    ("blimp_phenomena.png", "BLiMP accuracy per phenomenon", blimp_phenomena),
)


def make_plots(results: dict, out: Path) -> list[tuple[str, str]]:
    """Write the PNG plots that have data into `out`; returns (file name, caption) of each one drawn."""
    return [(file, caption) for file, caption, draw in PLOTS if draw(results["models"], Path(out) / file)]
