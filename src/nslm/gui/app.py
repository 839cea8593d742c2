"""The Gradio app: Models, Train, Tell a story, Compare and Evaluate tabs over nslm's Python API.

`build_app(...)` returns the Blocks; `launch(...)` serves it on 127.0.0.1 with the theme, the CSS and
the narrow file permissions. Everything a tab shows about runs is read from the run folders, so tabs,
reloads and restarts all agree; only loaded models are kept in memory (shared, one lock per model).
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import functools  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402

from nslm.errors import NslmError  # noqa: E402
from nslm.gui import runs as runlib  # noqa: E402
from nslm.gui.reports import latest_report  # noqa: E402
from nslm.gui.storytelling import (  # noqa: E402
    ModelCache,
    NeighbourFinder,
    check_prompt,
    check_sampling,
    end_note,
    story_stream,
    truncation_note,
)
from nslm.gui.train_form import FIELDS, check_form, data_summary  # noqa: E402
from nslm.gui.training import ACTIVE_STATES, TrainingLauncher, default_run_name  # noqa: E402

log = logging.getLogger("nslm.gui")

DEFAULT_PROMPT = "Once upon a time, there was a"
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


def warn(message: str) -> str:
    return f"⚠ {message}"


def friendly(on_error):
    """Decorator: an NslmError (or, as a last resort, any error) fills the outputs with
    `on_error(message)` instead of breaking the page."""

    def wrap(fn):
        @functools.wraps(fn)
        def wrapper(*args):
            try:
                return fn(*args)
            except NslmError as exc:
                return on_error(warn(str(exc)))
            except Exception as exc:  # the app must keep serving whatever one request hits
                log.exception("%s failed", fn.__name__)
                return on_error(warn(f"Unexpected error: {type(exc).__name__}: {exc}"))

        return wrapper

    return wrap


def duration(seconds) -> str:
    if not isinstance(seconds, (int, float)) or seconds != seconds or seconds < 0:
        return "—"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def loss_figure(metrics: list[dict]):
    """Train and validation loss against step, as a matplotlib Figure (no pyplot: thread-safe)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.2), dpi=100)
    ax = fig.add_subplot()
    train = [(m["step"], m["train_loss"]) for m in metrics
             if m.get("event") == "train" and isinstance(m.get("train_loss"), (int, float))]
    val = [(m["step"], m["val_loss"]) for m in metrics
           if m.get("event") == "eval" and isinstance(m.get("val_loss"), (int, float))]
    if train:
        ax.plot(*zip(*train), label="train loss", color="#f97316")
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", color="#2563eb")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    if train or val:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no metrics yet", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig


@dataclass
class Context:
    """What every handler needs: folders, the training launcher, loaded models, the novelty index."""

    runs_dir: Path
    data_dir: Path | None
    db_path: Path | None
    reports_dir: Path | None
    launcher: TrainingLauncher
    cache: ModelCache
    neighbours: NeighbourFinder

    def entries(self) -> list[runlib.ModelEntry]:
        return runlib.list_models(self.runs_dir)

    def model_choices(self, loadable_only: bool = True) -> list[tuple[str, str]]:
        return [(e.label, e.key) for e in self.entries() if e.loadable or not loadable_only]

    def default_model(self) -> str | None:
        """The shipped model with the best validation bits per byte, else the newest loadable run."""
        loadable = [e for e in self.entries() if e.loadable]
        shipped = [e for e in loadable if e.kind == "shipped"]
        if shipped:
            return min(shipped, key=lambda e: runlib.as_float(e.val_bpb)).key
        return loadable[0].key if loadable else None

    def run_names(self) -> list[str]:
        return [e.name for e in self.entries() if e.kind == "run"]

    def rating_store(self):
        from nslm.eval.human import RatingStore

        return RatingStore(self.db_path)  # None: the store's default, $NSLM_HOME/ratings.sqlite


# ----- Models tab -------------------------------------------------------------------------------------


def models_view(ctx: Context):
    entries = ctx.entries()
    rows = [e.row() for e in entries] or [["(no models yet)"] + [""] * (len(runlib.TABLE_HEADERS) - 1)]
    all_choices = [(e.label, e.key) for e in entries]
    loadable = [(e.label, e.key) for e in entries if e.loadable]
    return rows, all_choices, loadable


def empty_state(ctx: Context) -> str:
    if ctx.default_model():
        return ""
    return ("**No model yet.** Train one in the **Train** tab (a few minutes on a laptop CPU gives a model "
            "that tells simple stories), or from a terminal: "
            "`nslm train --preset transformer-1m --data data/tinystories --out runs/tf1m --max-minutes 10`.")


def load_message(entry: runlib.ModelEntry | None, model) -> str:
    cfg = getattr(model, "config", {}) or {}
    params = (cfg.get("params") or {}).get("total")
    name = entry.name if entry else getattr(model, "name", "model")
    return (f"✓ Loaded **{name}**: {runlib.describe_arch(cfg.get('model') or {})}, "
            f"{runlib.human_count(params)} parameters, context {getattr(model, 'context_length', '?')} tokens. "
            "Go to **Tell a story**.")


# ----- Train tab --------------------------------------------------------------------------------------


def progress_html(progress, step, max_steps, state) -> str:
    p = progress if isinstance(progress, (int, float)) else 0.0
    p = min(max(p, 0.0), 1.0)
    of = f" of {max_steps}" if max_steps else ""
    return (f"<div class='nslm-progress' data-progress='{p:.4f}' data-step='{int(step or 0)}' "
            f"data-state='{state}'><div style='width:{100 * p:.1f}%'></div></div>"
            f"<p>{100 * p:.1f}% · step {int(step or 0)}{of}</p>")


def run_stats(state: str, status: dict, metrics: list[dict]) -> str:
    train = [m for m in metrics if m.get("event") == "train"]
    evals = [m for m in metrics if m.get("event") == "eval"]
    last = train[-1] if train else {}
    parts = [f"**state: {state}**"]
    if last:
        parts += [f"elapsed {duration(last.get('elapsed_s'))}",
                  f"ETA {duration(last.get('eta_s')) if state in ACTIVE_STATES else '—'}",
                  f"{last.get('tokens_per_s', 0):,.0f} tokens/s",
                  f"{runlib.human_count(last.get('tokens'))} tokens"]
        if isinstance(last.get("train_loss"), (int, float)):
            parts.append(f"train loss {last['train_loss']:.3f}")
    if evals and isinstance(evals[-1].get("val_loss"), (int, float)):
        bpb = evals[-1].get("val_bpb")
        parts.append(f"validation loss {evals[-1]['val_loss']:.3f}"
                     + (f" ({bpb:.3f} bits/byte)" if isinstance(bpb, (int, float)) else ""))
    parts.append(f"{len(train)} train points, {len(evals)} evaluations")
    return " · ".join(parts)


def watch_run(ctx: Context, name: str | None, last_signature: str):
    """Everything the live view shows about run `name`, read from its folder."""
    if not name:
        return ("Pick a run, or start one on the left.", progress_html(0, 0, 0, "none"), "",
                gr.skip() if last_signature == "none" else loss_figure([]), "", "", "none")
    try:
        runlib.check_name(name)
    except NslmError as exc:
        return (warn(str(exc)), progress_html(0, 0, 0, "none"), "", gr.skip(), "", "", last_signature)
    run_dir = ctx.runs_dir / name
    state = ctx.launcher.state(name)
    if state in ("missing", "unknown") and not run_dir.exists():
        return (warn(f"Run '{name}' no longer exists (its folder was deleted)."),
                progress_html(0, 0, 0, "missing"), "", gr.skip(), "", "", last_signature)
    status = runlib.read_status(run_dir)
    metrics = runlib.read_metrics(run_dir)
    train = [m for m in metrics if m.get("event") == "train"]
    last = train[-1] if train else {}
    samples = [m["sample"] for m in metrics if m.get("event") == "eval" and m.get("sample")]
    progress = last.get("progress", 1.0 if state == "finished" else 0.0)
    step = last.get("step", status.get("step", 0))
    header = f"### {name}"
    if state in ("failed", "interrupted"):
        header += "\n\n" + warn(f"Training {state}: {ctx.launcher.failure_reason(name)}")
    signature = f"{name}:{len(metrics)}"
    figure = gr.skip() if signature == last_signature else loss_figure(metrics)
    return (header, progress_html(progress, step, status.get("max_steps"), state),
            run_stats(state, status, metrics), figure, samples[-1] if samples else "",
            ctx.launcher.log_tail(name), signature)


# ----- Building the page ------------------------------------------------------------------------------


def build_app(runs_dir: str | Path = "runs", data_dir: str | Path | None = None, db_path: str | Path | None = None,
              reports_dir: str | Path | None = "reports", preload: bool = True) -> gr.Blocks:
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
    )
    default_model = ctx.default_model()
    if preload and default_model:
        try:
            ctx.cache.get(default_model)
        except NslmError as exc:
            log.warning("could not preload %s: %s", default_model, exc)

    with gr.Blocks(title="nslm: stories from small language models", analytics_enabled=False) as app:
        app.nslm_context = ctx
        gr.Markdown("# nslm · stories from not so large language models")
        empty = gr.Markdown(empty_state(ctx), elem_id="empty-state")
        with gr.Tabs():
            models_tab = _models_tab(ctx)
            train_tab = _train_tab(ctx)
            story_tab = _story_tab(ctx, default_model)
            compare_tab = _compare_tab(ctx, default_model)
            eval_tab = _eval_tab(ctx, default_model)
        _wire_models(ctx, app, models_tab, story_tab, compare_tab, eval_tab, empty)
        _wire_train(ctx, app, train_tab)
        _wire_story(ctx, story_tab)
        _wire_compare(ctx, compare_tab)
        _wire_eval(ctx, eval_tab)
    return app


def _models_tab(ctx: Context) -> dict:
    rows, all_choices, _ = models_view(ctx)
    with gr.Tab("Models", id="models"):
        gr.Markdown("Click a row or pick a model below, then **Load** it and go to **Tell a story**. "
                    "New and finished runs appear here by themselves.")
        table = gr.Dataframe(value=rows, headers=runlib.TABLE_HEADERS, interactive=False, wrap=True,
                             column_widths=["19%", "8%", "18%", "9%", "9%", "9%", "10%", "11%", "7%"],
                             label="Models shipped with nslm and in the runs folder (val bits/byte: validation "
                                   "bits per byte of the best checkpoint)", elem_id="model-table")
        with gr.Row():
            choice = gr.Dropdown(all_choices, value=ctx.default_model(), label="Model", scale=3,
                                 allow_custom_value=True, elem_id="models-choice")
            load = gr.Button("Load", variant="primary", scale=1, elem_id="load-model")
            refresh = gr.Button("Refresh list", scale=1, elem_id="refresh-models")
        message = gr.Markdown(elem_id="load-message")
        timer = gr.Timer(5.0)
    return dict(table=table, choice=choice, load=load, refresh=refresh, message=message, timer=timer)


def _field(component, name: str, errors: dict):
    errors[name] = gr.Markdown("", elem_classes=["nslm-field-error"], elem_id=f"error-{name}")
    return component


def preset_defaults(preset: str):
    """(ModelConfig, recommended learning rate) of a preset."""
    from nslm.models import load_preset, preset_train_defaults
    from nslm.train.config import TrainConfig

    return load_preset(preset), preset_train_defaults(preset).get("lr", TrainConfig().lr)


def _train_tab(ctx: Context) -> dict:
    from nslm.models import list_presets

    presets = list_presets()
    preset = "transformer-1m" if "transformer-1m" in presets else (presets[0] if presets else None)
    cfg, lr = preset_defaults(preset) if preset else (None, 2e-3)
    errors: dict = {}
    with gr.Tab("Train", id="train"):
        with gr.Row():
            with gr.Column(scale=2):
                gr.Markdown("### New run")
                f_preset = _field(gr.Dropdown(presets, value=preset, label="Preset", elem_id="train-preset"),
                                  "preset", errors)
                f_data = _field(gr.Textbox(str(ctx.data_dir or "data/tinystories"), label="Data folder",
                                           info="made by `nslm data prepare`", elem_id="train-data"), "data", errors)
                data_info = gr.Markdown(data_summary(str(ctx.data_dir or "data/tinystories"))[1],
                                        elem_id="train-data-info")
                with gr.Row():
                    with gr.Column(min_width=120):
                        f_width = _field(gr.Number(cfg.d_model if cfg else 128, label="Width (d_model)",
                                                   elem_id="train-width"), "width", errors)
                    with gr.Column(min_width=120):
                        f_layers = _field(gr.Number(cfg.n_layer if cfg else 4, label="Layers",
                                                    elem_id="train-layers"), "layers", errors)
                    with gr.Column(min_width=120):
                        f_context = _field(gr.Number(cfg.context_length if cfg else 256, label="Context (tokens)",
                                                     elem_id="train-context"), "context", errors)
                with gr.Row():
                    with gr.Column(min_width=120):
                        f_lr = _field(gr.Number(lr, label="Learning rate", elem_id="train-lr"), "lr", errors)
                    with gr.Column(min_width=120):
                        f_batch = _field(gr.Number(32, label="Batch (windows)", elem_id="train-batch"),
                                         "batch", errors)
                with gr.Row():
                    budget_kind = gr.Radio(["minutes", "tokens"], value="minutes", label="Budget in",
                                           elem_id="train-budget-kind")
                    with gr.Column(min_width=120):
                        f_budget = _field(gr.Number(10, label="Budget", elem_id="train-budget"), "budget", errors)
                f_name = _field(gr.Textbox(default_run_name(preset or "run"), label="Run name",
                                           elem_id="train-name"), "name", errors)
                with gr.Accordion("More settings", open=False):
                    f_extra = _field(gr.Textbox("", lines=2, label="Extra settings (section.key=value, one a line)",
                                                placeholder="train.eval_interval=100", elem_id="train-extra"),
                                     "extra", errors)
                params = gr.Markdown(elem_id="train-params")
                start = gr.Button("Start training", variant="primary", elem_id="train-start")
                start_message = gr.Markdown(elem_id="train-message")
            with gr.Column(scale=3):
                gr.Markdown("### Live view")
                with gr.Row():
                    run = gr.Dropdown(ctx.run_names(), value=ctx.launcher.active_run(), label="Run",
                                      allow_custom_value=True, scale=3, elem_id="train-run")
                    stop = gr.Button("Stop (saves a checkpoint)", variant="stop", scale=1, elem_id="train-stop")
                    resume = gr.Button("Resume", scale=1, elem_id="train-resume")
                header = gr.Markdown(elem_id="run-header")
                bar = gr.HTML(progress_html(0, 0, 0, "none"), elem_id="run-progress")
                stats = gr.Markdown(elem_id="run-stats")
                plot = gr.Plot(label="Loss", elem_id="run-plot")
                sample = gr.Textbox(label="Latest sample story (at the last evaluation)", lines=3, max_lines=6,
                                    interactive=False, elem_id="run-sample")
                with gr.Accordion("Process output", open=False):
                    log_tail = gr.Textbox(lines=8, interactive=False, show_label=False, elem_id="run-log")
                signature = gr.State("")
                timer = gr.Timer(2.0)
    fields = dict(preset=f_preset, data=f_data, width=f_width, layers=f_layers, context=f_context, lr=f_lr,
                  batch=f_batch, budget=f_budget, name=f_name, extra=f_extra)
    return dict(fields=fields, errors=errors, budget_kind=budget_kind, data_info=data_info, params=params,
                start=start, start_message=start_message, run=run, stop=stop, resume=resume, header=header,
                bar=bar, stats=stats, plot=plot, sample=sample, log_tail=log_tail, signature=signature,
                timer=timer)


def _sampling_controls(prefix: str) -> dict:
    with gr.Row():
        temperature = gr.Slider(0.0, 2.0, value=0.8, step=0.05, label="Temperature", elem_id=f"{prefix}-temperature")
        top_k = gr.Number(0, label="Top-k (0 = off)", precision=0, elem_id=f"{prefix}-top-k")
        top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.05, label="Top-p (1 = off)", elem_id=f"{prefix}-top-p")
    with gr.Row():
        max_tokens = gr.Slider(8, 1024, value=300, step=1, label="Max tokens", elem_id=f"{prefix}-max-tokens")
        seed = gr.Number(-1, label="Seed (-1 = random)", precision=0, elem_id=f"{prefix}-seed")
    return dict(temperature=temperature, top_k=top_k, top_p=top_p, max_tokens=max_tokens, seed=seed)


def _story_tab(ctx: Context, default_model: str | None) -> dict:
    with gr.Tab("Tell a story", id="story"):
        with gr.Row():
            with gr.Column(scale=3):
                model = gr.Dropdown(ctx.model_choices(), value=default_model, label="Model", allow_custom_value=True,
                                    elem_id="story-model")
                prompt = gr.Textbox(DEFAULT_PROMPT, lines=3, label="Beginning of the story",
                                    placeholder=DEFAULT_PROMPT, elem_id="story-prompt")
                with gr.Accordion("Sampling", open=False):
                    sampling = _sampling_controls("story")
                generate = gr.Button("Generate", variant="primary", elem_id="story-generate")
                story = gr.Textbox(lines=12, label="Story", interactive=False, elem_id="story-text")
                note = gr.Markdown(elem_id="story-note")
                with gr.Accordion("Rate this story", open=True):
                    with gr.Row():
                        grammar = gr.Slider(1, 10, value=5, step=1, label="Grammar", elem_id="rate-grammar")
                        creativity = gr.Slider(1, 10, value=5, step=1, label="Creativity", elem_id="rate-creativity")
                        consistency = gr.Slider(1, 10, value=5, step=1, label="Consistency",
                                                elem_id="rate-consistency")
                    with gr.Row():
                        comment = gr.Textbox(label="Comment", scale=3, elem_id="rate-comment")
                        rater = gr.Textbox(label="Your name", scale=1, elem_id="rate-rater")
                    save = gr.Button("Save rating", elem_id="rate-save")
                    rate_message = gr.Markdown(elem_id="rate-message")
            with gr.Column(scale=2):
                gr.Markdown("### Closest training story")
                neighbour = gr.HTML("<p class='nslm-muted'>Generate a story to see the training story "
                                    "most like it.</p>", elem_id="story-neighbour")
    return dict(model=model, prompt=prompt, generate=generate, story=story, note=note, neighbour=neighbour,
                grammar=grammar, creativity=creativity, consistency=consistency, comment=comment, rater=rater,
                save=save, rate_message=rate_message, **sampling)


def _compare_tab(ctx: Context, default_model: str | None) -> dict:
    choices = ctx.model_choices()
    second = next((key for _, key in choices if key != default_model), default_model)
    with gr.Tab("Compare", id="compare"):
        gr.Markdown("The same prompt and seed on two models, side by side.")
        with gr.Row():
            model_a = gr.Dropdown(choices, value=default_model, label="Model A", allow_custom_value=True,
                                  elem_id="compare-a")
            model_b = gr.Dropdown(choices, value=second, label="Model B", allow_custom_value=True,
                                  elem_id="compare-b")
        prompt = gr.Textbox(DEFAULT_PROMPT, lines=2, label="Beginning of the story", elem_id="compare-prompt")
        with gr.Accordion("Sampling", open=False):
            sampling = _sampling_controls("compare")
        sampling["seed"].value = 1234
        generate = gr.Button("Generate both", variant="primary", elem_id="compare-generate")
        with gr.Row():
            with gr.Column():
                story_a = gr.Textbox(lines=12, label="Model A", interactive=False, elem_id="compare-story-a")
                note_a = gr.Markdown(elem_id="compare-note-a")
            with gr.Column():
                story_b = gr.Textbox(lines=12, label="Model B", interactive=False, elem_id="compare-story-b")
                note_b = gr.Markdown(elem_id="compare-note-b")
    return dict(model_a=model_a, model_b=model_b, prompt=prompt, generate=generate, story_a=story_a,
                story_b=story_b, note_a=note_a, note_b=note_b, **sampling)


def _eval_tab(ctx: Context, default_model: str | None) -> dict:
    with gr.Tab("Evaluate", id="evaluate"):
        with gr.Row():
            model = gr.Dropdown(ctx.model_choices(loadable_only=False), value=default_model, label="Model",
                                scale=3, allow_custom_value=True, elem_id="eval-model")
            show = gr.Button("Show evaluation", scale=1, elem_id="eval-show")
        ratings = gr.Markdown(elem_id="eval-ratings")
        report = gr.Markdown(elem_id="eval-report")
        plots = gr.Gallery(label="Plots", columns=2, height="auto", visible=False, elem_id="eval-plots")
    return dict(model=model, show=show, ratings=ratings, report=report, plots=plots)


# ----- Wiring -----------------------------------------------------------------------------------------


def _wire_models(ctx: Context, app, m: dict, s: dict, c: dict, e: dict, empty) -> None:
    def refresh(*current):
        rows, all_choices, loadable = models_view(ctx)
        keys = {key for _, key in loadable}
        default = ctx.default_model()
        picks = [gr.update(choices=all_choices)]
        for value in current[1:]:
            picks.append(gr.update(choices=loadable, value=value if value in keys else default))
        return [rows, *picks, gr.update(choices=all_choices), empty_state(ctx)]

    def tick(last, *current):
        """The timer's refresh: only when the list changed, so an open dropdown is left alone."""
        rows, all_choices, _ = models_view(ctx)
        signature = repr((rows, all_choices))
        if signature == last:
            return [gr.skip()] * len(outputs) + [last]
        return [*refresh(*current), signature]

    outputs = [m["table"], m["choice"], s["model"], c["model_a"], c["model_b"], e["model"], empty]
    inputs = [m["choice"], s["model"], c["model_a"], c["model_b"]]
    listed = gr.State("")
    m["refresh"].click(refresh, inputs, outputs, api_name="refresh_models")
    m["timer"].tick(tick, [listed, *inputs], [*outputs, listed], api_visibility="private", show_progress="hidden")
    app.load(tick, [listed, *inputs], [*outputs, listed], api_visibility="private")

    def pick_row(evt: gr.SelectData):
        entries = ctx.entries()
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return entries[row].key if isinstance(row, int) and 0 <= row < len(entries) else gr.skip()

    m["table"].select(pick_row, None, m["choice"], api_visibility="private")

    @friendly(lambda message: (message, gr.skip(), gr.skip()))
    def load(key):
        entry = next((x for x in ctx.entries() if x.key == key), None)
        if entry is None:
            runlib.model_path(key, ctx.runs_dir)  # a bad name gets its own message
            raise NslmError("That model is no longer in the list (deleted?); press Refresh list.")
        model, _ = ctx.cache.get(key)
        return load_message(entry, model), gr.update(value=key), gr.update(value=key)

    m["load"].click(load, m["choice"], [m["message"], s["model"], e["model"]], api_name="load_model")


def _wire_train(ctx: Context, app, t: dict) -> None:
    fields = t["fields"]
    names = list(FIELDS)
    form_inputs = [fields["preset"], fields["data"], fields["width"], fields["layers"], fields["context"],
                   fields["lr"], fields["batch"], t["budget_kind"], fields["budget"], fields["name"],
                   fields["extra"]]
    error_outputs = [t["errors"][n] for n in names]

    def form_view(*values):
        result = check_form(*values)
        return [result.errors.get(n, "") for n in names] + [result.params_text, result.data_text]

    gr.on([f.change for f in fields.values()] + [t["budget_kind"].change], form_view, form_inputs,
          error_outputs + [t["params"], t["data_info"]], api_name="check_train_form", show_progress="hidden")
    app.load(form_view, form_inputs, error_outputs + [t["params"], t["data_info"]], api_visibility="private")

    def preset_values(preset):
        try:
            cfg, lr = preset_defaults(preset)
        except NslmError:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return cfg.d_model, cfg.n_layer, cfg.context_length, lr, default_run_name(preset)

    fields["preset"].input(preset_values, fields["preset"],
                           [fields["width"], fields["layers"], fields["context"], fields["lr"], fields["name"]],
                           api_visibility="private")

    def start(*values):
        result = check_form(*values)
        shown = [result.errors.get(n, "") for n in names]
        if not result.ok:
            return [warn("Fix the marked fields first."), gr.skip(), *shown]
        try:
            name = ctx.launcher.start(str(values[9]).strip(), result.args)
        except NslmError as exc:
            return [warn(str(exc)), gr.skip(), *shown]
        return [f"Started **{name}** in its own process; closing this page does not stop it.",
                gr.update(choices=ctx.run_names() + [name], value=name), *shown]

    def fresh_name(preset, message):
        return default_run_name(preset) if str(message).startswith("Started") else gr.skip()

    # every page, and every successful start, proposes a new run name
    t["start"].click(start, form_inputs, [t["start_message"], t["run"], *error_outputs],
                     api_name="start_training").then(fresh_name, [fields["preset"], t["start_message"]],
                                                      fields["name"], api_visibility="private")
    app.load(default_run_name, fields["preset"], fields["name"], api_visibility="private")

    def act(verb):
        def handler(name):
            if not name:
                return warn("Pick a run first.")
            try:
                if verb == "stop":
                    return ctx.launcher.stop(name)
                ctx.launcher.resume(name)
                return f"Resuming **{name}** from its last checkpoint."
            except NslmError as exc:
                return warn(str(exc))

        return handler

    t["stop"].click(act("stop"), t["run"], t["start_message"], api_name="stop_training")
    t["resume"].click(act("resume"), t["run"], t["start_message"], api_name="resume_training")

    live_outputs = [t["header"], t["bar"], t["stats"], t["plot"], t["sample"], t["log_tail"], t["signature"]]

    def watch(name, signature):
        try:
            return watch_run(ctx, name, signature)
        except Exception as exc:  # a half-deleted folder must not stop the timer
            log.exception("live view failed")
            return (warn(f"Cannot read run {name!r}: {exc}"), gr.skip(), gr.skip(), gr.skip(), gr.skip(),
                    gr.skip(), signature)

    t["run"].change(watch, [t["run"], gr.State("")], live_outputs, api_name="watch_run", show_progress="hidden")
    t["timer"].tick(watch, [t["run"], t["signature"]], live_outputs, api_visibility="private",
                    show_progress="hidden")

    def runs_update(current):
        names_now = ctx.run_names()
        active = ctx.launcher.active_run()
        value = current if current else active
        return gr.update(choices=names_now, value=value)

    app.load(runs_update, t["run"], t["run"], api_visibility="private")


def _generate(ctx: Context, key, prompt, temperature, top_k, top_p, max_tokens, seed):
    """Yield (story so far, note, model or None); the last item carries the model. Shared by two tabs."""
    try:
        prompt = check_prompt(prompt)
        sampling = check_sampling(temperature, top_k, top_p, max_tokens, seed)
        model, lock = ctx.cache.get(key)
    except NslmError as exc:
        yield "", warn(str(exc)), None
        return
    waited = False
    while not lock.acquire(timeout=0.25):
        if not waited:
            waited = True
            yield "", "Waiting: another story is being told with this model; yours starts as soon as it ends.", None
    text, truncated = "", False
    started = time.time()
    try:
        stream = story_stream(model, prompt, sampling)
        while True:
            try:
                text, truncated = next(stream)
            except StopIteration as stop:
                story = stop.value
                break
            yield text, truncation_note(model) if truncated else "", None
    except NslmError as exc:
        yield text, warn(str(exc)), None
        return
    except Exception as exc:  # one failed request must not take the app down
        log.exception("generation failed")
        yield text, warn(f"Generation failed: {type(exc).__name__}: {exc}"), None
        return
    finally:
        lock.release()
    ended = bool(story.ended) if story is not None else True
    notes = [truncation_note(model) if truncated else "", end_note(ended, sampling.max_tokens),
             f"({time.time() - started:.1f} s)"]
    yield (story.text if story is not None else text), " ".join(n for n in notes if n), model


def _wire_story(ctx: Context, s: dict) -> None:
    inputs = [s["model"], s["prompt"], s["temperature"], s["top_k"], s["top_p"], s["max_tokens"], s["seed"]]

    def tell(*values):
        busy = "<p class='nslm-muted'>Looking for the closest training story once the story is told…</p>"
        text = ""
        for text, note, model in _generate(ctx, *values):
            if model is None:
                yield text, note, busy if text else gr.skip()
                continue
            yield text, note, busy
            try:
                neighbour = ctx.neighbours.html(model, text)
            except Exception as exc:  # the story stands even when the index cannot be read
                log.exception("closest story failed")
                neighbour = f"<p class='nslm-warn'>Closest training story unavailable: {type(exc).__name__}</p>"
            yield text, note, neighbour

    s["generate"].click(tell, inputs, [s["story"], s["note"], s["neighbour"]], api_name="tell",
                        concurrency_limit=4)
    s["prompt"].submit(tell, inputs, [s["story"], s["note"], s["neighbour"]], api_visibility="private",
                       concurrency_limit=4)

    @friendly(lambda message: message)
    def rate(key, prompt, story, grammar, creativity, consistency, comment, rater):
        if not story or not str(story).strip():
            raise NslmError("Generate a story first, then rate it.")
        scores = {}
        for what, value in (("grammar", grammar), ("creativity", creativity), ("consistency", consistency)):
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise NslmError(f"The {what} score must be a whole number from 1 to 10.") from None
            if number != int(number) or not 1 <= number <= 10:
                raise NslmError(f"The {what} score must be a whole number from 1 to 10, not {value!r}.")
            scores[what] = int(number)
        path = runlib.model_path(key, ctx.runs_dir)
        store = ctx.rating_store()
        store.add(model=path.name, prompt=str(prompt or ""), story=str(story), comment=str(comment or ""),
                  rater=str(rater or "").strip() or "anonymous", **scores)
        return (f"✓ Saved: grammar {scores['grammar']}, creativity {scores['creativity']}, "
                f"consistency {scores['consistency']} for **{path.name}**.")

    s["save"].click(rate, [s["model"], s["prompt"], s["story"], s["grammar"], s["creativity"], s["consistency"],
                           s["comment"], s["rater"]], s["rate_message"], api_name="rate")


def _wire_compare(ctx: Context, c: dict) -> None:
    def compare(key_a, key_b, prompt, temperature, top_k, top_p, max_tokens, seed):
        if not key_a or not key_b:
            yield "", warn("Pick two models."), "", ""
            return
        story_a = note_a = ""
        for story_a, note_a, _ in _generate(ctx, key_a, prompt, temperature, top_k, top_p, max_tokens, seed):
            yield story_a, note_a, "", "waiting for model A…"
        for story_b, note_b, _ in _generate(ctx, key_b, prompt, temperature, top_k, top_p, max_tokens, seed):
            yield story_a, note_a, story_b, note_b

    c["generate"].click(compare, [c["model_a"], c["model_b"], c["prompt"], c["temperature"], c["top_k"],
                                  c["top_p"], c["max_tokens"], c["seed"]],
                        [c["story_a"], c["note_a"], c["story_b"], c["note_b"]], api_name="compare",
                        concurrency_limit=2)


def ratings_markdown(ctx: Context, model_name: str) -> str:
    """One line: how many ratings a model has and their means."""
    try:
        summary = ctx.rating_store().summary().get(model_name)
    except Exception as exc:  # a missing or locked database must not hide the report
        return warn(f"Ratings unavailable: {exc}")
    if not summary:
        return f"No human ratings for **{model_name}** yet: rate stories under **Tell a story**."
    means = " · ".join(f"{what} {summary[what]:.1f}" for what in ("grammar", "creativity", "consistency")
                       if isinstance(summary.get(what), (int, float)))
    return (f"**Human ratings for {model_name}:** {summary.get('ratings', 0)} rating(s) from "
            f"{summary.get('raters', 0)} rater(s) · mean {means} (out of 10)")


def _wire_eval(ctx: Context, e: dict) -> None:
    @friendly(lambda message: (message, "", gr.update(value=[], visible=False)))
    def show(key):
        path = runlib.model_path(key, ctx.runs_dir)
        if not path.is_dir():
            raise NslmError(f"The model folder '{path.name}' no longer exists; press Refresh list.")
        report = latest_report(path, ctx.reports_dir)
        ratings = ratings_markdown(ctx, path.name)
        if report is None:
            return (ratings, f"No evaluation report for **{path.name}** yet. Make one with "
                    f"`nslm eval all --model {path} --data DIR --out reports/{path.name} --quick`.",
                    gr.update(value=[], visible=False))
        return (ratings, f"*Report: `{report.folder}`*\n\n{report.markdown}",
                gr.update(value=[str(p) for p in report.images], visible=bool(report.images)))

    e["show"].click(show, e["model"], [e["ratings"], e["report"], e["plots"]], api_name="show_report")


# ----- Serving ----------------------------------------------------------------------------------------


def served_folders(app: gr.Blocks) -> list[str]:
    """The only folders whose files the app may serve: runs, shipped models, evaluation reports."""
    ctx: Context = app.nslm_context
    folders = [ctx.runs_dir, runlib.shipped_dir()]
    if ctx.reports_dir is not None:
        folders.append(ctx.reports_dir)
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
