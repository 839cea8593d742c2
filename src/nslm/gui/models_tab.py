"""The Models tab: every shipped model and run with its figures; Load one; keep every model picker in step."""

from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr

from nslm.errors import NslmError
from nslm.gui import runs as runlib
from nslm.gui.context import Context, friendly


@dataclass
class ModelsTab:
    table: gr.Dataframe
    choice: gr.Dropdown
    load: gr.Button
    refresh: gr.Button
    message: gr.Markdown
    timer: gr.Timer
    listed: gr.State  # the list this page shows now, so the timer only redraws when it changed


@dataclass
class Pickers:
    """The model dropdowns of the other tabs, and what they offer."""

    loadable: list[gr.Dropdown] = field(default_factory=list)  # models that can tell stories
    any: list[gr.Dropdown] = field(default_factory=list)  # every listed model (evaluation reports)
    loaded: list[gr.Dropdown] = field(default_factory=list)  # set to the model just loaded
    empty: gr.Markdown | None = None


def table_rows(entries: list[runlib.ModelEntry]) -> list[list[str]]:
    return [e.row() for e in entries] or [["(no models yet)"] + [""] * (len(runlib.TABLE_HEADERS) - 1)]


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


def build(ctx: Context) -> ModelsTab:
    entries = ctx.entries()
    with gr.Tab("Models", id="models"):
        gr.Markdown("Click a row or pick a model below, then **Load** it and go to **Tell a story**. "
                    "New and finished runs appear here by themselves.")
        table = gr.Dataframe(value=table_rows(entries), headers=runlib.TABLE_HEADERS, interactive=False, wrap=True,
                             column_widths=["19%", "8%", "18%", "9%", "9%", "9%", "10%", "11%", "7%"],
                             label="Models shipped with nslm and in the runs folder (val bits/byte: validation "
                                   "bits per byte of the best checkpoint)", elem_id="model-table")
        with gr.Row():
            choice = gr.Dropdown([(e.label, e.key) for e in entries], value=ctx.default_model(), label="Model",
                                 scale=3, min_width=200, allow_custom_value=True, elem_id="models-choice")
            load = gr.Button("Load", variant="primary", scale=1, min_width=80, elem_id="load-model")
            refresh = gr.Button("Refresh list", scale=1, min_width=80, elem_id="refresh-models")
        message = gr.Markdown(elem_id="load-message")
        timer = gr.Timer(5.0)
        listed = gr.State("")  # inside the tab: a child of gr.Tabs that is not a tab upsets the tab bar
    return ModelsTab(table=table, choice=choice, load=load, refresh=refresh, message=message, timer=timer,
                     listed=listed)


def wire(ctx: Context, app: gr.Blocks, tab: ModelsTab, pickers: Pickers) -> None:
    selectable = [tab.choice, *pickers.loadable, *pickers.any]
    outputs = [tab.table, *selectable, pickers.empty, tab.listed]

    def refresh(*current) -> dict:
        entries = ctx.entries()
        everything = [(e.label, e.key) for e in entries]
        loadable = [(e.label, e.key) for e in entries if e.loadable]
        keys = {key for _, key in loadable}
        default = ctx.default_model()
        update = {tab.table: table_rows(entries), tab.choice: gr.update(choices=everything),
                  pickers.empty: empty_state(ctx), tab.listed: repr((table_rows(entries), everything))}
        for picker, value in zip(pickers.loadable, current[1:]):
            update[picker] = gr.update(choices=loadable, value=value if value in keys else default)
        for picker in pickers.any:
            update[picker] = gr.update(choices=everything)
        return update

    def tick(listed, *current) -> dict:
        """The timer's refresh: only when the list changed, so an open dropdown is left alone."""
        entries = ctx.entries()
        if repr((table_rows(entries), [(e.label, e.key) for e in entries])) == listed:
            return {tab.listed: listed}  # Gradio needs one key; the list is unchanged
        return refresh(*current)

    inputs = [tab.choice, *pickers.loadable]
    tab.refresh.click(refresh, inputs, outputs, api_name="refresh_models")
    tab.timer.tick(tick, [tab.listed, *inputs], outputs, api_visibility="private", show_progress="hidden")
    app.load(tick, [tab.listed, *inputs], outputs, api_visibility="private")

    def pick_row(evt: gr.SelectData):
        entries = ctx.entries()
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        picked = isinstance(row, int) and 0 <= row < len(entries)
        return {tab.choice: entries[row].key if picked else gr.skip()}

    tab.table.select(pick_row, None, [tab.choice], api_visibility="private")

    @friendly(lambda message: {tab.message: message})
    def load(key) -> dict:
        entry = next((x for x in ctx.entries() if x.key == key), None)
        if entry is None:
            runlib.model_path(key, ctx.runs_dir)  # a bad name gets its own message
            raise NslmError("That model is no longer in the list (deleted?); press Refresh list.")
        model, _ = ctx.cache.get(key)
        return {tab.message: load_message(entry, model), **{picker: gr.update(value=key) for picker in pickers.loaded}}

    tab.load.click(load, tab.choice, [tab.message, *pickers.loaded], api_name="load_model")
