"""Find the newest evaluation report (`nslm eval all --out REPORT`) that covers a given model.

A report folder holds `results.json`, `report.md` and PNG plots. Reports are looked for in the reports
folder and inside the model's own folder, one and two levels deep.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from nslm.atomic import read_json


IMAGE_LINE = re.compile(r"!\[[^\]]*\]\([^)]*\)")


@dataclass
class Report:
    folder: Path
    markdown: str
    images: list[Path] = field(default_factory=list)


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [str(k), *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def covers(results: dict, model_dir: Path) -> bool:
    """True if results.json names the model (by its folder path or folder name)."""
    name = model_dir.name
    for text in _strings(results):
        text = text.rstrip("/")
        if text == name or text.endswith("/" + name):
            return True
    return False


def _candidates(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = [p.parent for p in root.glob("*/results.json")] + [p.parent for p in root.glob("*/*/results.json")]
    if (root / "results.json").is_file():
        found.append(root)
    return found


def latest_report(model_dir: Path, reports_dir: Path | None) -> Report | None:
    """The newest report folder whose results.json covers the model, or None."""
    folders = _candidates(model_dir)
    if reports_dir is not None:
        folders += _candidates(Path(reports_dir))
    best, best_time = None, -1.0
    for folder in set(folders):
        results = read_json(folder / "results.json")
        if results is None or not covers(results, model_dir) and not folder.is_relative_to(model_dir):
            continue
        try:
            mtime = (folder / "results.json").stat().st_mtime
        except OSError:
            continue
        if mtime > best_time:
            best, best_time = folder, mtime
    if best is None:
        return None
    try:
        markdown = (best / "report.md").read_text(encoding="utf-8", errors="replace")
    except OSError:
        markdown = "This report has no report.md; its figures are in results.json."
    # Plots are shown in the gallery below; relative image links would not resolve in the page.
    markdown = IMAGE_LINE.sub("", markdown)
    return Report(best, markdown, sorted(best.glob("*.png")))
