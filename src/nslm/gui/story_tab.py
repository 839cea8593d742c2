"""The Tell a story and Compare tabs: stream stories as they are generated, stop them, rate them, and
tell the same prompt and seed on two models at once."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, fields

import gradio as gr

from nslm.errors import NslmError
from nslm.gui import runs as runlib
from nslm.gui.context import UNEXPECTED, Context, friendly, log, warn
from nslm.gui.storytelling import check_prompt, check_sampling, end_note, story_stream, truncation_note

DEFAULT_PROMPT = "Once upon a time, there was a"
NEIGHBOUR_WAIT = "<p class='nslm-muted'>Looking for the closest training story once the story is told…</p>"
NEIGHBOUR_HINT = "<p class='nslm-muted'>Generate a story to see the training story most like it.</p>"
# The page is sent the story at most this often: a browser redrawing the story for every token (hundreds a
# second) falls behind on a busy machine and reacts late to Stop.
STREAM_EVERY_S = 0.1
STOPPED_NOTE = "Stopped: the story is cut where you pressed Stop."


class StopSignals:
    """One stop signal per page and tab. Stop sets it and the story being told ends its own stream at the
    next token, so the page keeps the stream's last update (a cancelled stream's late updates would
    overwrite the note that says it was stopped)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._signals: dict[str, threading.Event] = {}

    def start(self, page: str) -> threading.Event:
        with self._lock:
            signal = self._signals[page] = threading.Event()
            return signal

    def stop(self, page: str) -> None:
        with self._lock:
            signal = self._signals.get(page)
        if signal is not None:
            signal.set()

    def end(self, page: str, signal: threading.Event) -> None:
        with self._lock:
            if self._signals.get(page) is signal:
                del self._signals[page]


def page_key(request: gr.Request | None) -> str:
    """The browser page (Gradio session) a request comes from; API calls without one share a key."""
    return getattr(request, "session_hash", None) or "api"


@dataclass
class SamplingControls:
    """The sampling settings in the order `check_sampling` takes them."""

    temperature: gr.Number
    top_k: gr.Number
    top_p: gr.Number
    max_tokens: gr.Number
    seed: gr.Number

    def inputs(self) -> list:
        return [getattr(self, f.name) for f in fields(self)]


@dataclass
class StoryTab:
    model: gr.Dropdown
    loaded: gr.Markdown
    prompt: gr.Textbox
    sampling: SamplingControls
    generate: gr.Button
    stop: gr.Button
    story: gr.Textbox
    note: gr.Markdown
    neighbour: gr.HTML
    grammar: gr.Slider
    creativity: gr.Slider
    consistency: gr.Slider
    comment: gr.Textbox
    rater: gr.Textbox
    save: gr.Button
    rate_message: gr.Markdown
    told: gr.State  # {"key", "prompt", "story"} of the story on the page: a rating goes to the model that told it


@dataclass
class CompareTab:
    model_a: gr.Dropdown
    model_b: gr.Dropdown
    prompt: gr.Textbox
    sampling: SamplingControls
    generate: gr.Button
    stop: gr.Button
    story_a: gr.Textbox
    note_a: gr.Markdown
    story_b: gr.Textbox
    note_b: gr.Markdown


# ----- generating -------------------------------------------------------------------------------------


def sampling_note(sampling) -> str:
    """What the story was told with, so a changed or random setting is visible and repeatable."""
    seed = "a random seed" if sampling.seed is None else f"seed {sampling.seed}"
    return (f"Told with temperature {sampling.temperature:g}, top-k {sampling.top_k or 'off'}, "
            f"top-p {sampling.top_p or 'off'}, at most {sampling.max_tokens} tokens, {seed}.")


def generate(ctx: Context, key, prompt, temperature, top_k, top_p, max_tokens, seed, stop: threading.Event = None):
    """Yield (story so far, note, model or None); the last item carries the model. Shared by both tabs."""
    try:
        prompt = check_prompt(prompt)
        sampling = check_sampling(temperature, top_k, top_p, max_tokens, seed)
        model, lock = ctx.cache.get(key)
    except NslmError as exc:
        yield "", warn(str(exc)), None
        return
    waited = False
    while not lock.acquire(timeout=0.25):
        if stop is not None and stop.is_set():
            yield "", STOPPED_NOTE, None
            return
        if not waited:
            waited = True
            yield "", "Waiting: another story is being told with this model; yours starts as soon as it ends.", None
    text, truncated, story = "", False, None
    started = shown = time.time()
    try:
        stream = story_stream(model, prompt, sampling)
        while stop is None or not stop.is_set():
            try:
                text, truncated = next(stream)
            except StopIteration as done:
                story = done.value
                break
            if time.time() - shown >= STREAM_EVERY_S:
                shown = time.time()
                yield text, truncation_note(model) if truncated else "", None
    except NslmError as exc:
        yield text, warn(str(exc)), None
        return
    except Exception:  # one failed request must not take the app down
        log.exception("generation failed")
        yield text, warn(UNEXPECTED), None
        return
    finally:
        lock.release()
    notes = [truncation_note(model) if truncated else "",
             end_note(story.ended, sampling.max_tokens) if story is not None else STOPPED_NOTE,
             f"({time.time() - started:.1f} s)", sampling_note(sampling)]
    yield (story.text if story is not None else text), " ".join(n for n in notes if n), model


# ----- Tell a story -----------------------------------------------------------------------------------


def sampling_controls(prefix: str, seed: int = -1) -> SamplingControls:
    """Plain number boxes: what is typed is what is checked, so nothing is clamped without a word."""
    with gr.Row():
        temperature = gr.Number(0.8, label="Temperature (0 = likeliest word)", min_width=120,
                                elem_id=f"{prefix}-temperature")
        top_k = gr.Number(0, label="Top-k (0 = off)", min_width=100, elem_id=f"{prefix}-top-k")
        top_p = gr.Number(0.95, label="Top-p (1 = off)", min_width=100, elem_id=f"{prefix}-top-p")
        max_tokens = gr.Number(300, label="Max tokens", min_width=100, elem_id=f"{prefix}-max-tokens")
        seed = gr.Number(seed, label="Seed (-1 = random)", min_width=100, elem_id=f"{prefix}-seed")
    return SamplingControls(temperature, top_k, top_p, max_tokens, seed)


def loaded_text(ctx: Context, key) -> str:
    try:
        path = runlib.model_path(key, ctx.runs_dir)
    except NslmError:
        return "No model picked: choose one above or in **Models**."
    state = "loaded" if key in ctx.cache.loaded() else "loads on the first story"
    return f"Model **{path.name}** ({state})."


def build_story(ctx: Context, default_model: str | None) -> StoryTab:
    with gr.Tab("Tell a story", id="story"):
        with gr.Row():
            with gr.Column(scale=3, min_width=300):
                model = gr.Dropdown(ctx.model_choices(), value=default_model, label="Model", allow_custom_value=True,
                                    elem_id="story-model")
                loaded = gr.Markdown(loaded_text(ctx, default_model), elem_id="story-loaded")
                prompt = gr.Textbox(DEFAULT_PROMPT, lines=3, label="Beginning of the story",
                                    placeholder=DEFAULT_PROMPT, elem_id="story-prompt")
                sampling = sampling_controls("story")
                with gr.Row():
                    generate_button = gr.Button("Generate", variant="primary", elem_id="story-generate")
                    stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="story-stop")
                story = gr.Textbox(lines=12, label="Story", interactive=False, elem_id="story-text")
                note = gr.Markdown(elem_id="story-note")
                with gr.Accordion("Rate this story", open=True):
                    with gr.Row():
                        grammar = gr.Slider(1, 10, value=5, step=1, label="Grammar", elem_id="rate-grammar")
                        creativity = gr.Slider(1, 10, value=5, step=1, label="Creativity", elem_id="rate-creativity")
                        consistency = gr.Slider(1, 10, value=5, step=1, label="Consistency",
                                                elem_id="rate-consistency")
                    with gr.Row():
                        comment = gr.Textbox(label="Comment", scale=3, min_width=200, elem_id="rate-comment")
                        rater = gr.Textbox(label="Your name", scale=1, min_width=120, elem_id="rate-rater")
                    save = gr.Button("Save rating", elem_id="rate-save")
                    rate_message = gr.Markdown(elem_id="rate-message")
                    gr.Markdown(f"Ratings are stored in `{ctx.rating_store().path}` (the same store as "
                                "`nslm eval human`).", elem_classes=["nslm-muted"], elem_id="rate-store")
            with gr.Column(scale=2, min_width=280):
                gr.Markdown("### Closest training story")
                neighbour = gr.HTML(NEIGHBOUR_HINT, elem_id="story-neighbour")
        told = gr.State(None)
    return StoryTab(model=model, loaded=loaded, prompt=prompt, sampling=sampling, generate=generate_button, stop=stop,
                    story=story, note=note, neighbour=neighbour, grammar=grammar, creativity=creativity,
                    consistency=consistency, comment=comment, rater=rater, save=save, rate_message=rate_message,
                    told=told)


def _busy(tab, busy: bool) -> dict:
    """Generate shows that it is working and Stop can act only while a story is being told."""
    return {tab.generate: gr.update(interactive=not busy, value="Generating…" if busy else tab.generate.value),
            tab.stop: gr.update(interactive=busy)}


def wire_story(ctx: Context, tab: StoryTab) -> None:
    inputs = [tab.model, tab.prompt, *tab.sampling.inputs()]
    outputs = [tab.story, tab.note, tab.neighbour, tab.loaded, tab.generate, tab.stop, tab.told]

    stops = StopSignals()

    # Named parameters, not *values: Gradio finds the request argument by its place in the signature.
    def tell(key, prompt, temperature, top_k, top_p, max_tokens, seed, request: gr.Request = None):
        """Each update carries the whole view so far, so an API client's last result is the whole story."""
        page = page_key(request)
        stop = stops.start(page)
        view = {tab.story: "", tab.note: "", tab.neighbour: NEIGHBOUR_HINT, tab.told: None}
        try:
            for text, note, model in generate(ctx, key, prompt, temperature, top_k, top_p, max_tokens, seed,
                                              stop=stop):
                view.update({tab.story: text, tab.note: note,
                             tab.neighbour: NEIGHBOUR_WAIT if text else NEIGHBOUR_HINT,
                             tab.told: {"key": key, "prompt": str(prompt or ""), "story": text} if text else None})
                if model is not None:
                    yield {**view, tab.loaded: loaded_text(ctx, key), **_busy(tab, False)}
                    view[tab.neighbour] = neighbour_html(ctx, model, text)
                yield view
            yield {**view, **_busy(tab, False)}
        finally:
            stops.end(page, stop)

    for trigger, api in ((tab.generate.click, "tell"), (tab.prompt.submit, None)):
        busy = trigger(lambda: _busy(tab, True), None, [tab.generate, tab.stop], api_visibility="private",
                       queue=False)
        busy.then(tell, inputs, outputs, api_name=api, api_visibility="public" if api else "private",
                  concurrency_limit=4)

    def stop_story(request: gr.Request = None) -> dict:
        stops.stop(page_key(request))
        return {tab.stop: gr.update(interactive=False)}  # Generate comes back with the story's last update

    tab.stop.click(stop_story, None, [tab.stop], api_visibility="private", queue=False)
    tab.model.change(lambda key: loaded_text(ctx, key), tab.model, tab.loaded, api_visibility="private",
                     queue=False)

    @friendly(lambda message: {tab.rate_message: message})
    def rate(key, prompt, story, grammar, creativity, consistency, comment, rater, told) -> dict:
        if not story or not str(story).strip():
            raise NslmError("Generate a story first, then rate it.")
        if told and told.get("story") == story:
            # the page's story: the model and beginning that told it, whatever the controls show now (an API
            # client, which has no page state, names them itself)
            key, prompt = told["key"], told["prompt"]
        path = runlib.model_path(key, ctx.runs_dir)
        ctx.rating_store().add(model=path.name, prompt=str(prompt or ""), story=str(story), grammar=grammar,
                               creativity=creativity, consistency=consistency, comment=str(comment or ""),
                               rater=str(rater or "").strip() or "anonymous")
        return {tab.rate_message: f"✓ Saved: grammar {grammar:g}, creativity {creativity:g}, "
                                  f"consistency {consistency:g} for **{path.name}**."}

    tab.save.click(rate, [tab.model, tab.prompt, tab.story, tab.grammar, tab.creativity, tab.consistency, tab.comment,
                          tab.rater, tab.told], tab.rate_message, api_name="rate")


def neighbour_html(ctx: Context, model, story: str) -> str:
    try:
        return ctx.neighbours.html(model, story)
    except Exception:  # the story stands even when the index cannot be read
        log.exception("closest story failed")
        return "<p class='nslm-warn'>The closest training story is unavailable right now (see the app's log).</p>"


# ----- Compare ----------------------------------------------------------------------------------------


def build_compare(ctx: Context, default_model: str | None) -> CompareTab:
    choices = ctx.model_choices()
    second = next((key for _, key in choices if key != default_model), default_model)
    with gr.Tab("Compare", id="compare"):
        gr.Markdown("The same prompt and seed on two models, side by side, told at the same time.")
        with gr.Row():
            model_a = gr.Dropdown(choices, value=default_model, label="Model A", allow_custom_value=True,
                                  min_width=160, elem_id="compare-a")
            model_b = gr.Dropdown(choices, value=second, label="Model B", allow_custom_value=True,
                                  min_width=160, elem_id="compare-b")
        prompt = gr.Textbox(DEFAULT_PROMPT, lines=2, label="Beginning of the story", elem_id="compare-prompt")
        sampling = sampling_controls("compare", seed=1234)
        with gr.Row():
            generate_button = gr.Button("Generate both", variant="primary", elem_id="compare-generate")
            stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="compare-stop")
        with gr.Row():
            with gr.Column(min_width=260):
                story_a = gr.Textbox(lines=12, label="Model A", interactive=False, elem_id="compare-story-a")
                note_a = gr.Markdown(elem_id="compare-note-a")
            with gr.Column(min_width=260):
                story_b = gr.Textbox(lines=12, label="Model B", interactive=False, elem_id="compare-story-b")
                note_b = gr.Markdown(elem_id="compare-note-b")
    return CompareTab(model_a=model_a, model_b=model_b, prompt=prompt, sampling=sampling, generate=generate_button,
                      stop=stop, story_a=story_a, note_a=note_a, story_b=story_b, note_b=note_b)


def both_at_once(ctx: Context, keys: dict, values: tuple, stop: threading.Event):
    """Yield (side, story so far, note) from both sides' streams as they come, each side in its own thread,
    until both end; setting `stop` ends both at their next token."""
    updates: queue.Queue = queue.Queue()

    def tell(side, key):
        try:
            for text, note, _ in generate(ctx, key, *values, stop=stop):
                updates.put((side, text, note))
        finally:
            updates.put((side, None, None))

    for side, key in keys.items():
        threading.Thread(target=tell, args=(side, key), daemon=True, name=f"compare-{side}").start()
    running = set(keys)
    try:
        while running:
            side, text, note = updates.get()
            if text is None:
                running.discard(side)
            else:
                yield side, text, note
    finally:
        stop.set()  # the page went away or Stop was pressed: the threads end at their next token


def wire_compare(ctx: Context, tab: CompareTab) -> None:
    shown = {"a": (tab.story_a, tab.note_a), "b": (tab.story_b, tab.note_b)}
    outputs = [tab.story_a, tab.note_a, tab.story_b, tab.note_b, tab.generate, tab.stop]

    stops = StopSignals()

    def compare(key_a, key_b, prompt, temperature, top_k, top_p, max_tokens, seed, request: gr.Request = None):
        view = {tab.story_a: "", tab.note_a: "", tab.story_b: "", tab.note_b: ""}
        if not key_a or not key_b:
            yield {**view, tab.note_a: warn("Pick two models."), **_busy(tab, False)}
            return
        page = page_key(request)
        stop = stops.start(page)
        try:
            yield view
            values = (prompt, temperature, top_k, top_p, max_tokens, seed)
            for side, text, note in both_at_once(ctx, {"a": key_a, "b": key_b}, values, stop):
                story, note_box = shown[side]
                view.update({story: text, note_box: note})
                yield view
            yield {**view, **_busy(tab, False)}
        finally:
            stops.end(page, stop)

    busy = tab.generate.click(lambda: _busy(tab, True), None, [tab.generate, tab.stop], api_visibility="private",
                              queue=False)
    busy.then(compare, [tab.model_a, tab.model_b, tab.prompt, *tab.sampling.inputs()], outputs,
              api_name="compare", concurrency_limit=2)

    def stop_both(request: gr.Request = None) -> dict:
        stops.stop(page_key(request))
        return {tab.stop: gr.update(interactive=False)}

    tab.stop.click(stop_both, None, [tab.stop], api_visibility="private", queue=False)
