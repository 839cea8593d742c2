"""The Train tab: the new-run form on the left, the live view of a run on the right.

The live view reads the run folder every second (status.json, metrics.jsonl and the process output),
so every browser tab, a reload and a restart of the app all show the same run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from nslm.device import pick_device
from nslm.errors import NslmError
from nslm.gui import runs as runlib
from nslm.gui.context import Context, by_component, duration, log, warn
from nslm.gui.train_form import FIELDS, FORM_FIELDS, TrainForm, check_form, data_summary
from nslm.gui.training import ACTIVE_STATES, default_run_name
from nslm.models import list_presets, load_preset, preset_train_defaults
from nslm.train.config import TrainConfig

# What the live view says while a new process has not logged its first step yet.
STARTING_NOTE = "Starting: loading the data, building the model and taking the first steps…"
# The plot's columns and their types: an empty frame must carry them too, because the page's chart keeps the
# axis kinds of its first data (an untyped empty frame makes both axes categorical and draws no line).
PLOT_TYPES = {"step": "int64", "loss": "float64", "curve": "str"}


@dataclass
class LiveState:
    """Per page: the metrics already drawn, so the plot is only re-sent when a point was added."""

    drawn: str = ""
    state: str = ""  # the run state whose buttons are shown, so they are only re-sent when it changes


@dataclass
class TrainTab:
    fields: dict  # TrainForm field name -> component
    errors: dict  # field name -> the Markdown under it
    data_info: gr.Markdown
    params: gr.Markdown
    start: gr.Button
    start_message: gr.Markdown
    run: gr.Dropdown
    stop: gr.Button
    resume: gr.Button
    more_minutes: gr.Number
    extend: gr.Button
    run_message: gr.Markdown
    header: gr.Markdown
    bar: gr.HTML
    stats: gr.Markdown
    plot: gr.LinePlot
    sample: gr.Textbox
    log_tail: gr.Textbox
    timer: gr.Timer
    live: gr.State

    @property
    def form_inputs(self) -> list:
        return [self.fields[name] for name in FORM_FIELDS]

    @property
    def live_outputs(self) -> list:
        return [self.header, self.bar, self.stats, self.plot, self.sample, self.log_tail, self.stop, self.resume,
                self.extend, self.live]


def preset_defaults(preset: str):
    """(ModelConfig, recommended learning rate, batch size on this machine's training device) of a preset."""
    train = TrainConfig.from_dict({k: v for k, v in preset_train_defaults(preset).items() if k in ("lr", "batch_size")})
    return load_preset(preset), train.lr, train.for_device(pick_device("auto")).batch_size


def form_of(tab: TrainTab, values: dict) -> TrainForm:
    """The form's values by field name, from Gradio's {component: value}."""
    return TrainForm(**{name: values[tab.fields[name]] for name in FORM_FIELDS})


# ----- the live view ----------------------------------------------------------------------------------


def progress_html(progress, step, max_steps, state) -> str:
    p = progress if isinstance(progress, (int, float)) else 0.0
    p = min(max(p, 0.0), 1.0)
    of = f" of {max_steps}" if max_steps else ""
    return (f"<div class='nslm-progress' data-progress='{p:.4f}' data-step='{int(step or 0)}' "
            f"data-state='{state}'><div style='width:{100 * p:.1f}%'></div></div>"
            f"<p>{100 * p:.1f}% · step {int(step or 0)}{of}</p>")


def tokens_per_second(line: dict) -> float | None:
    """The one throughput the page shows: tokens trained so far over the run's elapsed time (evaluations
    included), so the figure during the run and at its end mean the same thing."""
    tokens, elapsed = line.get("tokens"), line.get("elapsed_s")
    if isinstance(tokens, (int, float)) and isinstance(elapsed, (int, float)) and elapsed > 0:
        return tokens / elapsed
    return None


def elapsed_now(state: str, last: dict, logged_at: float | None) -> float | None:
    """Elapsed training time: the last logged figure, plus the time since it was logged while the run is active
    (so the clock ticks every second between log lines)."""
    elapsed = last.get("elapsed_s")
    if not isinstance(elapsed, (int, float)):
        return None
    if state in ("running", "starting") and logged_at:
        elapsed += max(0.0, time.time() - logged_at)
    return elapsed


def run_stats(state: str, metrics: list[dict], logged_at: float | None = None) -> str:
    train = [m for m in metrics if m.get("event") == "train"]
    evals = [m for m in metrics if m.get("event") == "eval"]
    last = train[-1] if train else {}
    parts = [f"**state: {state}**"]
    if state == "starting" and not train:
        return f"**state: starting** · {STARTING_NOTE}"
    if last:
        rate = tokens_per_second(last)
        parts += [f"elapsed {duration(elapsed_now(state, last, logged_at))}",
                  f"ETA {duration(last.get('eta_s')) if state in ACTIVE_STATES else '—'}",
                  f"{rate:,.0f} tokens/s" if rate else "— tokens/s",
                  f"{runlib.human_count(last.get('tokens'))} tokens"]
        if isinstance(last.get("train_loss"), (int, float)):
            parts.append(f"train loss {last['train_loss']:.3f}")
    best = runlib.best_eval(metrics)
    if evals and isinstance(evals[-1].get("val_loss"), (int, float)):
        bpb = evals[-1].get("val_bpb")
        parts.append(f"validation loss {evals[-1]['val_loss']:.3f}"
                     + (f" ({bpb:.3f} bits/byte)" if isinstance(bpb, (int, float)) else ""))
    if best is not None and best is not evals[-1]:
        parts.append(f"best {best['val_loss']:.3f} at step {best.get('step')}")
    parts.append(f"{len(train)} train points, {len(evals)} evaluations")
    return " · ".join(parts)


def loss_frame(metrics: list[dict]) -> pd.DataFrame:
    """Train and validation loss against step, one row per point, for the native line plot."""
    rows = [(m["step"], m["train_loss"], "train") for m in metrics
            if m.get("event") == "train" and isinstance(m.get("train_loss"), (int, float))]
    rows += [(m["step"], m["val_loss"], "validation") for m in metrics
             if m.get("event") == "eval" and isinstance(m.get("val_loss"), (int, float))]
    return pd.DataFrame(rows, columns=list(PLOT_TYPES)).astype(PLOT_TYPES)


def _buttons(tab: TrainTab, state: str) -> dict:
    """Stop, Resume and "train more" look disabled when they cannot act on a run in `state`."""
    return {tab.stop: gr.update(interactive=state in ("starting", "running")),
            tab.resume: gr.update(interactive=state in ("stopped", "interrupted")),
            tab.extend: gr.update(interactive=state in ("finished", "stopped", "interrupted"))}


def watch_run(ctx: Context, tab: TrainTab, name: str | None, live: LiveState) -> dict:
    """Everything the live view shows about run `name`, read from its folder."""
    blank = {tab.bar: progress_html(0, 0, 0, "none"), tab.stats: "", tab.sample: "", tab.log_tail: "",
             **_buttons(tab, "none")}
    if not name:
        return {**blank, tab.header: "Pick a run, or start one on the left.", tab.plot: loss_frame([]),
                tab.live: LiveState()}
    try:
        run_dir = runlib.child_folder(ctx.runs_dir, name)
    except NslmError as exc:
        return {**blank, tab.header: warn(str(exc))}
    state = ctx.launcher.state(name)
    if state in ("missing", "unknown") and not run_dir.exists():
        return {**blank, tab.header: warn(f"Run '{name}' no longer exists (its folder was deleted)."),
                tab.bar: progress_html(0, 0, 0, "missing")}
    status = runlib.read_status(run_dir)
    metrics = runlib.read_metrics(run_dir)
    train = [m for m in metrics if m.get("event") == "train"]
    last = train[-1] if train else {}
    samples = [m["sample"] for m in metrics if m.get("event") == "eval" and m.get("sample")]
    header = f"### {name}"
    if state in ("failed", "interrupted"):
        header += "\n\n" + warn(f"Training {state}: {ctx.launcher.failure_reason(name)}")
    drawn = f"{name}:{len(metrics)}"
    view = {tab.header: header,
            tab.bar: progress_html(last.get("progress", 1.0 if state == "finished" else 0.0),
                                   last.get("step", status.get("step", 0)), status.get("max_steps"), state),
            tab.stats: run_stats(state, metrics, runlib.metrics_time(run_dir)),
            tab.sample: samples[-1] if samples else "", tab.log_tail: ctx.launcher.log_tail(name),
            tab.live: LiveState(drawn, state)}
    if state != live.state:
        view.update(_buttons(tab, state))
    if drawn != live.drawn:
        view[tab.plot] = loss_frame(metrics)
    return view


# ----- building the tab -------------------------------------------------------------------------------


def _field(component, name: str, errors: dict):
    errors[name] = gr.Markdown("", elem_classes=["nslm-field-error"], elem_id=f"error-{name}")
    return component


def _number(value, label: str, name: str, errors: dict):
    with gr.Column(min_width=110):
        return _field(gr.Number(value, label=label, elem_id=f"train-{name}"), name, errors)


def _form(ctx: Context) -> tuple[dict, dict, gr.Markdown]:
    presets = list_presets()
    preset = "transformer-1m" if "transformer-1m" in presets else (presets[0] if presets else None)
    cfg, lr, batch = preset_defaults(preset) if preset else (None, 2e-3, 32)
    errors: dict = {}
    data = str(ctx.data_dir or "data/tinystories")
    fields = {"preset": _field(gr.Dropdown(presets, value=preset, label="Preset", elem_id="train-preset"),
                               "preset", errors),
              "data": _field(gr.Textbox(data, label="Data folder", info="made by `nslm data prepare`",
                                        elem_id="train-data"), "data", errors)}
    data_info = gr.Markdown(data_summary(data)[1], elem_id="train-data-info")
    with gr.Row():
        fields["width"] = _number(cfg.d_model if cfg else 128, "Width (d_model)", "width", errors)
        fields["layers"] = _number(cfg.n_layer if cfg else 4, "Layers", "layers", errors)
        fields["context"] = _number(cfg.context_length if cfg else 256, "Context (tokens)", "context", errors)
    with gr.Row():
        fields["lr"] = _number(lr, "Learning rate", "lr", errors)
        fields["batch"] = _number(batch, "Batch (windows)", "batch", errors)
    with gr.Row():
        fields["budget_kind"] = gr.Radio(["minutes", "tokens"], value="minutes", label="Budget in",
                                         elem_id="train-budget-kind")
        fields["budget"] = _number(10, "Budget", "budget", errors)
    fields["name"] = _field(gr.Textbox(default_run_name(preset or "run"), label="Run name", elem_id="train-name"),
                            "name", errors)
    with gr.Accordion("More settings", open=False):
        fields["extra"] = _field(gr.Textbox("", lines=2, label="Extra settings (section.key=value, one a line)",
                                            placeholder="train.eval_interval=100", elem_id="train-extra"),
                                 "extra", errors)
    return fields, errors, data_info


def build(ctx: Context) -> TrainTab:
    with gr.Tab("Train", id="train"):
        with gr.Row():
            with gr.Column(scale=2, min_width=300):
                gr.Markdown("### New run")
                fields, errors, data_info = _form(ctx)
                params = gr.Markdown(elem_id="train-params")
                start = gr.Button("Start training", variant="primary", elem_id="train-start")
                start_message = gr.Markdown(elem_id="train-message")
            with gr.Column(scale=3, min_width=300):
                gr.Markdown("### Live view")
                runs = ctx.run_names()
                run = gr.Dropdown(runs, value=ctx.launcher.active_run() or (runs[0] if runs else None), label="Run",
                                  allow_custom_value=True, elem_id="train-run")
                with gr.Row():
                    stop = gr.Button("Stop (saves a checkpoint)", variant="stop", min_width=140, interactive=False,
                                     elem_id="train-stop")
                    resume = gr.Button("Resume", min_width=90, interactive=False, elem_id="train-resume")
                    more_minutes = gr.Number(5, label="Minutes", min_width=90, elem_id="train-more")  # checked by extend()
                    extend = gr.Button("Train more minutes", min_width=140, interactive=False, elem_id="train-extend")
                run_message = gr.Markdown(elem_id="run-message")
                header = gr.Markdown(elem_id="run-header")
                bar = gr.HTML(progress_html(0, 0, 0, "none"), elem_id="run-progress")
                stats = gr.Markdown(elem_id="run-stats")
                # the colours fixed here: a scale taken from the first (empty) frame had no categories, and
                # the lines then came without a stroke on some loads
                plot = gr.LinePlot(loss_frame([]), x="step", y="loss", color="curve", label="Loss (nats/token)",
                                   y_title="loss (nats/token)", color_title="", height=280, elem_id="run-plot",
                                   color_map={"train": "#4c78a8", "validation": "#f58518"})
                sample = gr.Textbox(label="Latest sample story (at the last evaluation)", lines=3, max_lines=6,
                                    interactive=False, elem_id="run-sample")
                with gr.Accordion("Process output", open=False):
                    log_tail = gr.Textbox(lines=8, interactive=False, show_label=False, elem_id="run-log")
                timer = gr.Timer(1.0)
                live = gr.State(LiveState())
    return TrainTab(fields=fields, errors=errors, data_info=data_info, params=params, start=start,
                    start_message=start_message, run=run, stop=stop, resume=resume, more_minutes=more_minutes,
                    extend=extend, run_message=run_message, header=header, bar=bar, stats=stats, plot=plot,
                    sample=sample, log_tail=log_tail, timer=timer, live=live)


# ----- wiring ---------------------------------------------------------------------------------------------


def _wire_form(ctx: Context, app: gr.Blocks, tab: TrainTab) -> None:
    checked = [tab.errors[name] for name in FIELDS] + [tab.params, tab.data_info]

    def form_view(values: dict) -> dict:
        result = check_form(form_of(tab, values))
        return {**{tab.errors[name]: result.errors.get(name, "") for name in FIELDS},
                tab.params: result.params_text, tab.data_info: result.data_text}

    handler = by_component(tab.form_inputs, form_view)
    gr.on([c.change for c in tab.form_inputs], handler, tab.form_inputs, checked, api_name="check_train_form",
          show_progress="hidden")
    app.load(handler, tab.form_inputs, checked, api_visibility="private")

    shape = [tab.fields[name] for name in ("width", "layers", "context", "lr", "batch", "name")]

    def preset_values(preset) -> dict:
        try:
            cfg, lr, batch = preset_defaults(preset)
        except NslmError:
            return {shape[0]: gr.skip()}  # an unknown preset leaves the fields as they are
        return dict(zip(shape, (cfg.d_model, cfg.n_layer, cfg.context_length, lr, batch, default_run_name(preset))))

    tab.fields["preset"].input(preset_values, tab.fields["preset"], shape, api_visibility="private")


def _wire_actions(ctx: Context, app: gr.Blocks, tab: TrainTab) -> None:
    error_outputs = [tab.errors[name] for name in FIELDS]

    def start(values: dict) -> dict:
        form = form_of(tab, values)
        result = check_form(form)
        shown = {tab.errors[name]: result.errors.get(name, "") for name in FIELDS}
        if not result.ok:
            return {tab.start_message: warn("Fix the marked fields first."), **shown}
        try:
            name = ctx.launcher.start(str(form.name).strip(), result.args)
        except NslmError as exc:
            return {tab.start_message: warn(str(exc)), **shown}
        return {tab.start_message: f"Started **{name}** in its own process; closing this page does not stop it.",
                tab.run: gr.update(choices=ctx.run_names() + [name], value=name),
                tab.fields["name"]: default_run_name(form.preset), **shown}

    tab.start.click(by_component(tab.form_inputs, start), tab.form_inputs,
                    [tab.start_message, tab.run, tab.fields["name"], *error_outputs], api_name="start_training")
    app.load(default_run_name, tab.fields["preset"], tab.fields["name"], api_visibility="private")

    def act(verb: str):
        def handler(name, minutes=None) -> dict:
            if not name:
                return {tab.run_message: warn("Pick a run first.")}
            try:
                if verb == "stop":
                    return {tab.run_message: ctx.launcher.stop(name)}
                if verb == "extend":
                    return {tab.run_message: ctx.launcher.extend(name, minutes)}
                ctx.launcher.resume(name)
                return {tab.run_message: f"Resuming **{name}** from its last checkpoint."}
            except NslmError as exc:
                return {tab.run_message: warn(str(exc))}

        return handler

    tab.stop.click(act("stop"), tab.run, tab.run_message, api_name="stop_training")
    tab.resume.click(act("resume"), tab.run, tab.run_message, api_name="resume_training")
    tab.extend.click(act("extend"), [tab.run, tab.more_minutes], tab.run_message, api_name="train_more")


def _wire_live(ctx: Context, app: gr.Blocks, tab: TrainTab) -> None:
    def watch(name, live) -> dict:
        try:
            return watch_run(ctx, tab, name, live if isinstance(live, LiveState) else LiveState())
        except Exception:  # a half-deleted folder must not stop the timer
            log.exception("live view failed")
            return {tab.header: warn(f"Cannot read run {name!r} right now; it may be being deleted.")}

    tab.run.change(lambda name: watch(name, LiveState()), tab.run, tab.live_outputs, api_name="watch_run",
                   show_progress="hidden")
    tab.timer.tick(watch, [tab.run, tab.live], tab.live_outputs, api_visibility="private", show_progress="hidden")

    def runs_update() -> dict:
        """A new page (or a reload, which starts from the page's defaults): the run training now, else the
        most recent one."""
        names = ctx.run_names()
        return {tab.run: gr.update(choices=names, value=ctx.launcher.active_run() or (names[0] if names else None))}

    app.load(runs_update, None, tab.run, api_visibility="private")


def wire(ctx: Context, app: gr.Blocks, tab: TrainTab) -> None:
    _wire_form(ctx, app, tab)
    _wire_actions(ctx, app, tab)
    _wire_live(ctx, app, tab)
