"""The cleaning report as readable tables on the terminal."""

from __future__ import annotations


def clean_report_tables(report: dict) -> list:
    """One rich Table per split: stories in/out per rule with an example, then text totals."""
    from rich.table import Table

    tables = []
    for split in ("train", "valid"):
        rep = report.get(split)
        if not rep:
            continue
        title = f"Cleaning {split}: {rep['stories_in']:,} stories in, {rep['stories_out']:,} out"
        if split == "valid" and report.get("held_out"):
            title += f" (held out: {report['held_out']['share']:.0%} of the input)"
        if split == "train" and (report.get("dev") or {}).get("stories"):
            title += f" ({report['dev']['stories']:,} of them set aside as the dev split)"
        table = Table(title=title, show_lines=False)
        table.add_column("rule")
        table.add_column("in", justify="right")
        table.add_column("removed", justify="right")
        table.add_column("out", justify="right")
        table.add_column("example removed", overflow="fold", max_width=70)
        for rule in rep["rules"]:
            example = _short(rule["examples"][0]) if rule["examples"] else ""
            table.add_row(rule["rule"], f"{rule['in']:,}", f"{rule['removed']:,}", f"{rule['out']:,}", example)
        for fix, info in rep["changed"].items():
            table.add_row(f"fixed: {fix}", "", f"({info['stories']:,} changed)", "",
                          _short(info["examples"][0]["after"]) if info["examples"] else "")
        table.caption = (f"characters {rep['characters_in']:,} in, {rep['characters_out']:,} out; "
                         f"words out {rep['words_out']:,}; vocabulary {rep['vocabulary_out']:,}")
        tables.append(table)
    return tables


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def print_clean_report(report: dict, console=None) -> None:
    from rich.console import Console

    console = console or Console()
    for table in clean_report_tables(report):
        console.print(table)
