"""The Sweeps tab, beside Evaluate: a sweep folder's progress (trials done, running, failed, the best so far,
the time left), refreshed while the page is open, and its report (`nslm sweep report`): the trials table
and the plots. Sweeps are started with `nslm sweep run` on the command line, which survives the page."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from nslm.errors import NslmError
from nslm.gui.context import Context, duration, friendly
from nslm.sweep.report import write_report
from nslm.sweep.runner import SWEEP_FILE, open_sweep, progress

REPORT = "report"


@dataclass
class SweepsTab:
    sweep: gr.Dropdown
    refresh: gr.Button
    progress: gr.Markdown
    write: gr.Button
    report: gr.Markdown
    trials: gr.Dataframe
    plots: gr.Gallery
    timer: gr.Timer


def list_sweeps(root: Path | None) -> list[str]:
    """The sweep folders (those holding sweep.json) in `root`, by name."""
    if root is None or not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / SWEEP_FILE).is_file())


def sweep_folder(ctx: Context, name: str | None) -> Path:
    if not name or ctx.sweeps_dir is None:
        raise NslmError("Pick a sweep; start one with `nslm sweep run SPEC --out sweeps/NAME`.")
    folder = ctx.sweeps_dir / Path(name).name  # a name, never a path out of the sweeps folder
    if not (folder / SWEEP_FILE).is_file():
        raise NslmError(f"The sweep '{name}' no longer exists; press Refresh.")
    return folder


def progress_markdown(folder: Path) -> str:
    """One paragraph: trials done of all, running and failed, the best so far and the time left."""
    study, spec = open_sweep(folder)
    state = progress(study, spec)
    text = (f"**{folder.name}**: {state['done']} of {state['total']} trials done, {state['running']} running, "
            f"{state['failed']} failed · varied: {', '.join(spec.varied)} · seeds {', '.join(map(str, spec.seeds))}")
    if state["best_value"] is not None:
        settings = ", ".join(f"{k}={v}" for k, v in state["best_settings"].items())
        text += (f"\n\nBest so far: trial {state['best_trial']} ({settings}) at **{state['best_value']:.4f}** "
                 f"bits per byte ({state['selected_by']})")
    if state["eta_s"] is not None and state["done"] < state["total"]:
        text += f" · about {duration(state['eta_s'])} left"
    return text


def report_view(folder: Path, write: bool) -> tuple[str, list[list], list[str], list[str]]:
    """(heading, trials table rows, its columns, plot files) of the sweep's report, written first if `write`."""
    out = folder / REPORT
    if write:
        study, spec = open_sweep(folder)
        write_report(study, spec, out, title=folder.name)
    if not (out / "trials.csv").is_file():
        return (f"No report yet: press **Write the report**, or run `nslm sweep report {folder}`.", [], [], [])
    with open(out / "trials.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    plots = sorted(str(p) for p in out.glob("*.png"))
    shown = [[readable(cell) for cell in row] for row in rows[1:]]
    return (f"*Report: `{out}`* (trials best first, rounded here; `trials.csv` and `report.md` hold the full "
            "figures)", shown, [c.replace("_", " ") for c in rows[0]], plots)


def readable(cell: str) -> str:
    """A CSV cell as the table shows it: whole numbers with thousands separators, huge ones (FLOPs) in three
    figures, fractions (bits per byte, spreads) to four decimals; anything else as it is."""
    try:
        value = float(cell)
    except ValueError:
        return cell
    if not math.isfinite(value):
        return cell
    if abs(value) >= 1e9:
        return f"{value:.3g}"
    if value == int(value) and ("." not in cell or cell.endswith(".0")):
        return f"{int(value):,}"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"


def build(ctx: Context) -> SweepsTab:
    with gr.Tab("Sweeps", id="sweeps"):
        names = list_sweeps(ctx.sweeps_dir)
        with gr.Row():
            sweep = gr.Dropdown(names, value=names[0] if names else None, label="Sweep", scale=4, elem_id="sweep-pick")
            refresh = gr.Button("Refresh", scale=1, min_width=100, elem_id="sweep-refresh")
            write = gr.Button("Write the report", variant="primary", scale=1, min_width=160, elem_id="sweep-write")
        progress_md = gr.Markdown(elem_id="sweep-progress")
        report = gr.Markdown(elem_id="sweep-report")
        trials = gr.Dataframe(label="Trials", interactive=False, wrap=False, visible=False, elem_id="sweep-trials")
        plots = gr.Gallery(label="Plots", columns=2, height="auto", object_fit="contain", elem_id="sweep-plots")
        timer = gr.Timer(5.0)
    return SweepsTab(sweep=sweep, refresh=refresh, progress=progress_md, write=write, report=report, trials=trials,
                     plots=plots, timer=timer)


def show(ctx: Context, tab: SweepsTab, name: str | None, write: bool = False) -> dict:
    """Every component's value for the sweep `name` (its report written first when `write`)."""
    folder = sweep_folder(ctx, name)
    heading, rows, columns, plots = report_view(folder, write)
    return {tab.progress: progress_markdown(folder), tab.report: heading,
            tab.trials: gr.update(value=rows, headers=columns or None, visible=bool(rows)), tab.plots: plots}


def wire(ctx: Context, app: gr.Blocks, tab: SweepsTab) -> None:
    outputs = [tab.progress, tab.report, tab.trials, tab.plots]

    @friendly(lambda message: {tab.progress: message})
    def on_pick(name) -> dict:
        if not name:  # no sweep yet is a normal start, not a mistake
            return {tab.progress: f"No sweeps in `{ctx.sweeps_dir}` yet: start one with "
                                  "`nslm sweep run SPEC --out sweeps/NAME` (see studies/*.toml)."}
        return show(ctx, tab, name)

    @friendly(lambda message: {tab.progress: message})
    def on_write(name) -> dict:
        return show(ctx, tab, name, write=True)

    @friendly(lambda message: {tab.progress: message})
    def on_refresh(name) -> dict:
        names = list_sweeps(ctx.sweeps_dir)
        name = name if name in names else (names[0] if names else None)
        return {tab.sweep: gr.update(choices=names, value=name), **on_pick(name)}

    @friendly(lambda message: {tab.progress: message})
    def on_tick(name) -> dict:
        # no sweep picked: the page keeps what it shows (the "no sweeps yet" line), nothing to refresh
        return {tab.progress: progress_markdown(sweep_folder(ctx, name))} if name else {tab.progress: gr.skip()}

    tab.sweep.change(on_pick, tab.sweep, outputs, api_name="show_sweep", show_progress="hidden")
    tab.write.click(on_write, tab.sweep, outputs, api_name="write_sweep_report")
    tab.refresh.click(on_refresh, tab.sweep, [tab.sweep, *outputs], api_name="refresh_sweeps")
    tab.timer.tick(on_tick, tab.sweep, [tab.progress], api_visibility="private", show_progress="hidden")
    # a page opened later lists the sweeps there are now, not those there were when the app started
    app.load(on_refresh, tab.sweep, [tab.sweep, *outputs], api_visibility="private")
