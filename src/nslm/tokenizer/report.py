"""How well a tokenizer fits the stories: bytes per token, tokens per story, `<unk>` rate, how much of
the vocabulary the stories use, and whether decoding gives the text back. Several side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from nslm.tokenizer.core import Tokenizer


def _same_text(kind: str, original: str, decoded: str) -> bool:
    if kind != "word":
        return original == decoded
    # word-level keeps no line breaks; compare the words and punctuation as written
    return " ".join(original.split()) == " ".join(decoded.split())


def efficiency_report(tokenizer: Tokenizer, stories: Sequence[str], name: str | None = None) -> dict:
    """Measure `tokenizer` on `stories` (e.g. the validation split); returns a flat dict of numbers.

    `bytes_per_token` uses the UTF-8 bytes of the story texts; `vocab_used` is the share of the
    vocabulary that occurs at least once; `round_trip` the share of stories decoded back exactly
    (word-level: up to line breaks).
    """
    encoded = tokenizer.encode_batch(list(stories))
    tokens = sum(len(ids) for ids in encoded)
    n_bytes = sum(len(s.encode("utf-8")) for s in stories)
    used = {i for ids in encoded for i in ids}
    unk = 0
    if tokenizer.unk_id is not None:
        unk = sum(ids.count(tokenizer.unk_id) for ids in encoded)
    exact = sum(_same_text(tokenizer.kind, s, tokenizer.decode(ids)) for s, ids in zip(stories, encoded))
    n = max(1, len(stories))
    return {
        "name": name or tokenizer.kind,
        "kind": tokenizer.kind,
        "vocab_size": tokenizer.vocab_size,
        "stories": len(stories),
        "tokens": tokens,
        "bytes": n_bytes,
        "bytes_per_token": n_bytes / max(1, tokens),
        "tokens_per_story": tokens / n,
        "unk_rate": unk / max(1, tokens),
        "vocab_used": len(used) / max(1, tokenizer.vocab_size),
        "round_trip": exact / n,
    }


ROWS = (
    ("vocabulary size", "vocab_size", "{:,}"),
    ("bytes per token", "bytes_per_token", "{:.2f}"),
    ("tokens per story", "tokens_per_story", "{:.1f}"),
    ("<unk> rate", "unk_rate", "{:.2%}"),
    ("vocabulary used", "vocab_used", "{:.1%}"),
    ("exact round trip", "round_trip", "{:.1%}"),
)


def comparison_table(reports: Iterable[dict], title: str = "Tokenizer efficiency"):
    """A rich Table with one column per tokenizer report."""
    from rich.table import Table

    reports = list(reports)
    stories = reports[0]["stories"] if reports else 0
    table = Table(title=f"{title} on {stories} validation stories")
    table.add_column("measure")
    for rep in reports:
        table.add_column(rep["name"], justify="right")
    for label, key, fmt in ROWS:
        table.add_row(label, *[fmt.format(rep[key]) for rep in reports])
    return table


def comparison_markdown(reports: Sequence[dict]) -> str:
    """The same comparison as a Markdown table (for the README or a report file)."""
    lines = ["| measure | " + " | ".join(r["name"] for r in reports) + " |",
             "| --- |" + " ---: |" * len(reports)]
    for label, key, fmt in ROWS:
        lines.append(f"| {label} | " + " | ".join(fmt.format(r[key]) for r in reports) + " |")
    return "\n".join(lines)


def compare_tokenizers(paths: Sequence[str | Path], stories: Sequence[str]) -> list[dict]:
    """Load each tokenizer.json in `paths` and measure it on `stories`."""
    reports = []
    for path in paths:
        tok = Tokenizer.load(path)
        path = Path(path)
        name = path.parent.name if path.name == "tokenizer.json" else path.name
        reports.append(efficiency_report(tok, stories, name=f"{name} ({tok.kind})"))
    return reports
