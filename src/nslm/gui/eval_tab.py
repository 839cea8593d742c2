"""The Evaluate tab: the selected model's newest evaluation report and its human-rating averages,
shown as soon as a model is picked."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

import gradio as gr

from nslm.errors import NslmError
from nslm.gui import runs as runlib
from nslm.gui.context import Context, friendly, warn
from nslm.gui.reports import latest_report


@dataclass
class EvalTab:
    model: gr.Dropdown
    ratings: gr.Markdown
    report: gr.Markdown
    plots: gr.Gallery


def ratings_markdown(ctx: Context, model_name: str) -> str:
    """One line: how many ratings a model has and their means."""
    try:
        summary = ctx.rating_store().summary().get(model_name)
    except NslmError as exc:  # a missing or locked database must not hide the report
        return warn(f"Ratings unavailable: {exc}")
    if not summary:
        return f"No human ratings for **{model_name}** yet: rate stories under **Tell a story**."
    means = " · ".join(f"{what} {summary[what]:.1f}" for what in ("grammar", "creativity", "consistency")
                       if isinstance(summary.get(what), (int, float)))
    return (f"**Human ratings for {model_name}:** {summary.get('ratings', 0)} rating(s) from "
            f"{summary.get('raters', 0)} rater(s) · mean {means} (out of 10)")


def eval_command(ctx: Context, path) -> str:
    """The `nslm eval all` command line for one model, with the app's own folders filled in."""
    parts = ["nslm", "eval", "all", "--model", str(path)]
    if ctx.data_dir is not None:
        parts += ["--data", str(ctx.data_dir)]
    if ctx.reports_dir is not None:
        parts += ["--out", str(ctx.reports_dir / path.name)]
    return shlex.join([*parts, "--quick"])


def build(ctx: Context, default_model: str | None) -> EvalTab:
    with gr.Tab("Evaluate", id="evaluate"):
        model = gr.Dropdown(ctx.model_choices(loadable_only=False), value=default_model, label="Model",
                            allow_custom_value=True, elem_id="eval-model")
        ratings = gr.Markdown(elem_id="eval-ratings")
        report = gr.Markdown(elem_id="eval-report")
        plots = gr.Gallery(label="Plots", columns=2, height="auto", visible=False, elem_id="eval-plots")
    return EvalTab(model=model, ratings=ratings, report=report, plots=plots)


def wire(ctx: Context, app: gr.Blocks, tab: EvalTab) -> None:
    no_plots = gr.update(value=[], visible=False)

    @friendly(lambda message: {tab.ratings: message, tab.report: "", tab.plots: no_plots})
    def show(key) -> dict:
        path = runlib.model_path(key, ctx.runs_dir)
        if not path.is_dir():
            raise NslmError(f"The model folder '{path.name}' no longer exists; press Refresh list.")
        report = latest_report(path, ctx.reports_dir)
        ratings = ratings_markdown(ctx, path.name)
        if report is None:
            return {tab.ratings: ratings, tab.plots: no_plots,
                    tab.report: f"No evaluation report for **{path.name}** yet. Make one with "
                                f"`{eval_command(ctx, path)}`."}
        return {tab.ratings: ratings, tab.report: f"*Report: `{report.folder}`*\n\n{report.markdown}",
                tab.plots: gr.update(value=[str(p) for p in report.images], visible=bool(report.images))}

    outputs = [tab.ratings, tab.report, tab.plots]
    tab.model.change(show, tab.model, outputs, api_name="show_report", show_progress="hidden")
    app.load(show, tab.model, outputs, api_visibility="private")
