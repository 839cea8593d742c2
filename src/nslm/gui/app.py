"""The Gradio app: Models, Train, Tell a story, Compare, Evaluate and Sweeps tabs over nslm's Python API.

`build_app(...)` returns the Blocks; `launch(...)` serves it on 127.0.0.1 with the theme, the CSS and
the narrow file permissions. Each tab lives in its own module (`models_tab`, `train_tab`, `story_tab`,
`eval_tab`, `sweeps_tab`) as a dataclass of its components, and its handlers return values keyed by component.
Everything a tab shows about runs is read from the run folders, so tabs, reloads and restarts all agree;
only loaded models are kept in memory (shared, one lock per model).
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402

from nslm.errors import NslmError  # noqa: E402
from nslm.gui import eval_tab, models_tab, story_tab, sweeps_tab, train_tab  # noqa: E402
from nslm.gui import runs as runlib  # noqa: E402
from nslm.gui.context import Context, log  # noqa: E402
from nslm.gui.evaluation import EvaluationJobs  # noqa: E402
from nslm.gui.storytelling import ModelCache, NeighbourFinder  # noqa: E402
from nslm.gui.training import TrainingLauncher  # noqa: E402

CSS = """
.nslm-progress {height: 14px; background: #e5e7eb; border-radius: 7px; overflow: hidden;}
.nslm-progress > div {height: 100%; background: #f97316; transition: width 0.5s;}
.nslm-field-error {color: #b91c1c; font-size: 0.9em; min-height: 0;}
.nslm-field-error p {margin: 0;}
.nslm-neighbour mark {background: #fde68a; padding: 0 1px;}
.nslm-muted {color: #6b7280;}
.nslm-warn {color: #b91c1c;}
"""


def theme() -> gr.themes.Base:
    """The default look with system fonts, so the page needs nothing from the internet."""
    return gr.themes.Default(
        primary_hue="orange",
        font=["system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
    )


def build_app(runs_dir: str | Path = "runs", data_dir: str | Path | None = None, db_path: str | Path | None = None,
              reports_dir: str | Path | None = "reports", preload: bool = True,
              sweeps_dir: str | Path | None = "sweeps") -> gr.Blocks:
    """The whole app. `preload` loads the default model (a shipped one when present) before serving."""
    runs_dir = Path(runs_dir).resolve()
    ctx = Context(
        runs_dir=runs_dir,
        data_dir=Path(data_dir).resolve() if data_dir else None,
        db_path=Path(db_path) if db_path else None,
        reports_dir=Path(reports_dir).resolve() if reports_dir else None,
        launcher=TrainingLauncher(runs_dir),
        cache=ModelCache(runs_dir),
        neighbours=NeighbourFinder(Path(data_dir) if data_dir else None),
        evaluations=EvaluationJobs(Path(reports_dir).resolve()) if reports_dir else None,
        sweeps_dir=Path(sweeps_dir).resolve() if sweeps_dir else None,
    )
    if ctx.evaluations is not None:
        ctx.neighbours.build_progress = ctx.evaluations.index_progress
    default_model = ctx.default_model()
    if preload and default_model:
        try:
            ctx.cache.get(default_model)
        except NslmError as exc:
            log.warning("could not preload %s: %s", default_model, exc)

    with gr.Blocks(title="nslm: stories from small language models", analytics_enabled=False) as app:
        app.nslm_context = ctx
        gr.Markdown("# nslm · stories from not so large language models")
        empty = gr.Markdown(models_tab.empty_state(ctx), elem_id="empty-state")
        # On a phone the five tabs take two rows instead of hiding three behind a "more" menu.
        with gr.Tabs(overflow_behavior="wrap"):
            models = models_tab.build(ctx)
            train = train_tab.build(ctx)
            story = story_tab.build_story(ctx, default_model)
            compare = story_tab.build_compare(ctx, default_model)
            evaluate = eval_tab.build(ctx, default_model)
            sweeps = sweeps_tab.build(ctx)
        pickers = models_tab.Pickers(loadable=[story.model, compare.model_a, compare.model_b], any=[evaluate.model],
                                     loaded=[story.model, evaluate.model], empty=empty)
        models_tab.wire(ctx, app, models, pickers)
        train_tab.wire(ctx, app, train)
        story_tab.wire_story(ctx, story)
        story_tab.wire_compare(ctx, compare)
        eval_tab.wire(ctx, app, evaluate)
        sweeps_tab.wire(ctx, app, sweeps)
    return app


# ----- Serving ----------------------------------------------------------------------------------------


def served_folders(app: gr.Blocks) -> list[str]:
    """The only folders whose files the app may serve: runs, shipped models, evaluation reports, sweeps."""
    ctx: Context = app.nslm_context
    folders = [ctx.runs_dir, runlib.shipped_dir()]
    if ctx.reports_dir is not None:
        folders.append(ctx.reports_dir)
    if ctx.sweeps_dir is not None:
        folders.append(ctx.sweeps_dir)
    return [str(p) for p in folders]


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int | None = None) -> str:
    """Start serving `app` in a background thread; returns its local URL (`app.block_thread()` waits)."""
    app.queue(default_concurrency_limit=2)
    app.launch(
        server_name=host, server_port=port, share=False, prevent_thread_lock=True,
        allowed_paths=served_folders(app), theme=theme(), css=CSS, ssr_mode=False, quiet=True,
        show_error=True, footer_links=["api"],
    )
    return app.local_url
