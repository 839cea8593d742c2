"""The loss-curve PNG of a run, drawn from its metrics.jsonl."""

from __future__ import annotations

import io
from pathlib import Path

from nslm.atomic import atomic_write_bytes
from nslm.train.metrics import parse_metrics


def plot_loss(metrics_path: str | Path, png_path: str | Path) -> None:
    """Train loss and validation loss against tokens seen, written atomically to `png_path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, val = [], []
    for rec in parse_metrics(Path(metrics_path).read_text(encoding="utf-8")):
        if rec.get("event") == "train" and rec.get("train_loss") is not None:
            train.append((rec["tokens"], rec["train_loss"]))
        elif rec.get("event") == "eval":
            val.append((rec["tokens"], rec["val_loss"]))
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(png_path, buf.getvalue())
