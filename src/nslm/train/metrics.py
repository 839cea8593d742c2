"""Reading a run's `metrics.jsonl` (one JSON object per log step or evaluation), for plots, the GUI and reports."""

from __future__ import annotations

import json
from pathlib import Path


def parse_metrics(text: str) -> list[dict]:
    """The JSON objects of a metrics.jsonl text; a line still being written (or broken) is skipped."""
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of `run_dir/metrics.jsonl`; empty when the file is absent or unreadable."""
    try:
        text = (Path(run_dir) / "metrics.jsonl").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return parse_metrics(text)
