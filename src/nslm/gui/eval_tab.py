"""The Evaluate tab: the selected model's newest evaluation report and its human-rating averages, shown
as soon as a model is picked; *Evaluate* runs `nslm eval all` and *Build the novelty index* runs
`nslm eval novelty`, each as its own process with its progress on the page."""

from __future__ import annotations

import html
import shlex
from dataclasses import dataclass

import gradio as gr

from nslm.errors import NslmError
from nslm.eval import steps as measures
from nslm.eval.datasets import bundled_data_path, default_data_path, missing_data_hint
from nslm.eval.steps import STEP_NAMES as STEPS
from nslm.gui import runs as runlib
from nslm.gui.context import Context, duration, friendly, warn
from nslm.gui.evaluation import (INDEX_JOB, EvaluationJobs, JobView, build_seconds, estimate_seconds, index_coverage,
                                 train_stories)
from nslm.gui.reports import latest_report

STEP_MARKS = {"done": "✓", "running": "…", "skipped": "–", "failed": "✗"}


@dataclass
class EvalTab:
    model: gr.Dropdown
    depth: gr.Radio
    steps: gr.CheckboxGroup
    run: gr.Button
    run_message: gr.Markdown
    job: gr.HTML
    ratings: gr.Markdown
    report: gr.Markdown
    plots: gr.Gallery
    index: gr.Markdown
    build_index: gr.Button
    index_message: gr.Markdown
    timer: gr.Timer
    seen: gr.State  # the job state last shown, so a finished evaluation refreshes the report once


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


def depth_choices(ctx: Context) -> list[tuple[str, str]]:
    """Quick and full, each labelled with its rough time on this machine's data folder."""
    quick, full = estimate_seconds(ctx.data_dir, True), estimate_seconds(ctx.data_dir, False)
    return [(f"quick (about {duration(quick)})", "quick"),
            (f"full (index {duration(full)}, then every BLiMP pair and the whole validation set: an hour or more)"
             if full is not None else "full (an hour or more)", "full")]


def index_markdown(ctx: Context) -> str:
    """Which training stories the app's novelty index covers, or what building it takes."""
    if ctx.data_dir is None:
        return "No data folder: start the app with `nslm gui --data DIR` to build a novelty index."
    coverage, total = index_coverage(ctx.data_dir), train_stories(ctx.data_dir)
    if coverage is None:
        about = f" (about {duration(build_seconds(total, ctx.data_dir))} for {total:,} stories)" if total else ""
        return f"No novelty index for `{ctx.data_dir}` yet. *Build the novelty index*{about}."
    embedded, stories = coverage
    if embedded < stories:
        return (f"The novelty index of `{ctx.data_dir}` covers the first **{embedded:,} of {stories:,}** training "
                f"stories (a partial index). Building the rest takes about "
                f"{duration(build_seconds(stories - embedded, ctx.data_dir))}.")
    return f"The novelty index of `{ctx.data_dir}` covers all **{stories:,}** training stories."


def _without_data(stand_in: bool) -> dict[str, str]:
    return {step.name: missing_data_hint(step.dataset) for step in measures.STEPS
            if step.dataset and default_data_path(step.dataset) is None
            and (bundled_data_path(step.dataset) is not None) == stand_in}


def missing_data() -> dict[str, str]:
    """Measures whose public data set this machine lacks -> the sentence saying what to get and where to put it."""
    return _without_data(stand_in=False)


def stand_in_data() -> dict[str, str]:
    """Measures that run on the stand-in shipped with nslm (the evaluation prompts) because this machine lacks
    their public set -> the same sentence."""
    return _without_data(stand_in=True)


def data_markdown(missing: dict[str, str], stand_ins: dict[str, str] | None = None) -> str:
    """What the Measures box cannot run here, what it runs on a stand-in, and how to make it run on the public
    sets (the evaluation reads them at start)."""
    lines = [warn(f"**{step}** cannot run yet: {hint[0].upper() + hint[1:]} Restart the app after setting "
                  "NSLM_SHARED_DATA.") for step, hint in missing.items()]
    lines += [f"**{step}** runs on the small stand-in shipped with nslm here: {hint[0].upper() + hint[1:]} Restart "
              "the app after setting NSLM_SHARED_DATA." for step, hint in (stand_ins or {}).items()]
    return "\n".join("- " + line for line in lines)


def job_html(view: JobView) -> str:
    """One line per evaluation step (done, running, skipped with why), or the index build's progress, in a
    block whose data-job and data-state say what runs and how it stands. HTML, not Markdown: the page's
    Markdown strips those attributes and leaves Markdown inside HTML unrendered."""
    if view.state == "none":
        return ""
    if view.name == INDEX_JOB:
        done = {"running": f"{100 * (view.percent or 0):.0f}% of the stories embedded",
                "finished": "finished", "failed": f"failed: {view.error or 'see the app log'}"}[view.state]
        return f"<div data-job='index' data-state='{view.state}'>Building the novelty index: {html.escape(done)}</div>"
    error = f" — {view.error}" if view.error else ""
    lines = []
    for step in view.planned:
        state = view.steps.get(step, "waiting" if view.state == "running" else "not run")
        detail = f" ({view.detail[step]})" if step in view.detail else ""
        lines.append(f"<li>{STEP_MARKS.get(state, '·')} {html.escape(f'{step}: {state}{detail}')}</li>")
    return (f"<div data-job='evaluate' data-state='{view.state}'><p>Evaluating <b>{html.escape(view.name)}</b>: "
            f"{view.state}{html.escape(error)}</p><ul>{''.join(lines)}</ul></div>")


def build(ctx: Context, default_model: str | None) -> EvalTab:
    with gr.Tab("Evaluate", id="evaluate"):
        model = gr.Dropdown(ctx.model_choices(loadable_only=False), value=default_model, label="Model",
                            allow_custom_value=True, elem_id="eval-model")
        with gr.Row():
            depth = gr.Radio(depth_choices(ctx), value="quick", label="Evaluation", scale=3, min_width=240,
                             elem_id="eval-depth")
            run = gr.Button("Evaluate", variant="primary", scale=1, min_width=120, elem_id="eval-run")
        missing = missing_data()
        # the judge is left out: it needs an LLM grader's address and key, which `nslm eval all` takes
        offered = [s for s in STEPS if s != "judge"]
        steps = gr.CheckboxGroup(offered, value=[s for s in offered if s not in missing],
                                 label="Measures", info="the LLM judge runs from the command line: "
                                                        "`nslm eval all --judge-url URL`",
                                 elem_id="eval-steps")
        gr.Markdown(data_markdown(missing, stand_in_data()), elem_id="eval-data")
        run_message = gr.Markdown(elem_id="eval-message")
        job = gr.HTML(elem_id="eval-job")
        ratings = gr.Markdown(elem_id="eval-ratings")
        report = gr.Markdown(elem_id="eval-report")
        plots = gr.Gallery(label="Plots", columns=2, height="auto", object_fit="contain", visible=False,
                           elem_id="eval-plots")
        with gr.Accordion("Novelty index (the closest training story)", open=True):
            index = gr.Markdown(index_markdown(ctx), elem_id="index-status")
            build_index = gr.Button("Build the novelty index", elem_id="index-build")
            index_message = gr.Markdown(elem_id="index-message")
        timer = gr.Timer(2.0)
        seen = gr.State("")
    return EvalTab(model=model, depth=depth, steps=steps, run=run, run_message=run_message, job=job, ratings=ratings,
                   report=report, plots=plots, index=index, build_index=build_index, index_message=index_message,
                   timer=timer, seen=seen)


def _jobs(ctx: Context) -> EvaluationJobs:
    if ctx.evaluations is None:
        raise NslmError("The app has no reports folder; start it with `nslm gui --reports-dir DIR`.")
    return ctx.evaluations


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
                    tab.report: f"No evaluation report for **{path.name}** yet: press **Evaluate**, or run "
                                f"`{eval_command(ctx, path)}`."}
        return {tab.ratings: ratings, tab.report: f"*Report: `{report.folder}`*\n\n{report.markdown}",
                tab.plots: gr.update(value=[str(p) for p in report.images], visible=bool(report.images))}

    outputs = [tab.ratings, tab.report, tab.plots]
    tab.model.change(show, tab.model, outputs, api_name="show_report", show_progress="hidden")
    app.load(show, tab.model, outputs, api_visibility="private")

    @friendly(lambda message: {tab.run_message: message})
    def evaluate(key, depth, steps) -> dict:
        path = runlib.model_path(key, ctx.runs_dir)
        if not path.is_dir():
            raise NslmError(f"The model folder '{path.name}' no longer exists; press Refresh list.")
        name = _jobs(ctx).evaluate(path, ctx.data_dir, quick=depth != "full", steps=steps)
        return {tab.run_message: f"Evaluating **{name}** ({depth}) in its own process; its report appears here "
                                 "when it is done, and closing the page does not stop it."}

    tab.run.click(evaluate, [tab.model, tab.depth, tab.steps], tab.run_message, api_name="evaluate")

    @friendly(lambda message: {tab.index_message: message})
    def build_index() -> dict:
        _jobs(ctx).build_index(ctx.data_dir)
        return {tab.index_message: "Building the novelty index in its own process; progress shows above."}

    tab.build_index.click(build_index, None, tab.index_message, api_name="build_index")

    def watch(key, seen) -> dict:
        """Every second: the running (or last) job's progress; when it finishes, the report or index it made."""
        jobs = ctx.evaluations
        name = (jobs.active() or _latest(jobs)) if jobs else None
        view = jobs.view(name) if name else JobView("", "none")
        markdown = job_html(view)
        shown = f"{view.name}:{view.state}:{markdown}"
        if shown == seen:
            return {tab.seen: seen}  # nothing moved: send nothing for the page to redraw
        update = {tab.job: markdown, tab.seen: shown,
                  tab.run: gr.update(interactive=view.state != "running"),
                  tab.build_index: gr.update(interactive=view.state != "running")}
        if not seen.startswith(f"{view.name}:{view.state}:") and view.state != "running":
            # a job ended since the last tick: its report (or index) shows. Not on the page's first tick: the
            # page's load has shown the report already, and this tick may carry the model picked before the
            # user's pick, so its answer, arriving last, would put the wrong model's report back
            if seen and view.name != INDEX_JOB:
                update.update(show(key))
            update[tab.index] = index_markdown(ctx)
        return update

    watched = [tab.job, tab.index, tab.seen, tab.run, tab.build_index, *outputs]
    tab.timer.tick(watch, [tab.model, tab.seen], watched, api_name="evaluation_job", show_progress="hidden")


def _latest(jobs: EvaluationJobs) -> str | None:
    """The job started last, so a reload shows how the last evaluation ended."""
    records = [(float((jobs.jobs.record(n) or {}).get("started", 0)), n) for n in jobs.jobs.names()]
    return max(records)[1] if records else None
