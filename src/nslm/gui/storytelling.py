"""Telling stories in the app: loaded models shared by all users, sampling checks, and the closest
training story.

Models are loaded once and shared; each has a lock so that two users asking the same model at once
take turns instead of interleaving in one model, and a run whose best checkpoint changed (training
still going) is reloaded on the next request.
"""

from __future__ import annotations

import html
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nslm
from nslm.errors import NslmError
from nslm.eval.novelty import NoveltyIndex
from nslm.generate.api import check_options
from nslm.gui.overlap import mark_shared, shared_ngram_share
from nslm.gui.runs import model_path

MAX_PROMPT_CHARS = 20_000
MAX_NEW_TOKENS = 2048


@dataclass
class Sampling:
    """Checked sampling settings, in the form `StoryModel.stream` takes them."""

    max_tokens: int
    temperature: float
    top_k: int | None
    top_p: float | None
    seed: int | None

    def kwargs(self) -> dict:
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_k": self.top_k,
                "top_p": self.top_p, "seed": self.seed}


def _number(value, what: str) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise NslmError(f"{what} is empty: give a number.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise NslmError(f"{what} must be a number, not {value!r}.") from None
    return number


# generation's sentences name its arguments; the page names its fields
FIELD_LABELS = {"max_tokens": "Max tokens", "temperature": "Temperature", "top_k": "Top-k", "top_p": "Top-p",
                "seed": "Seed"}


def _labelled(message: str) -> str:
    name, _, rest = message.partition(" ")
    rest = rest.replace(", not None", ", not empty")
    return f"{FIELD_LABELS[name]} {rest}." if name in FIELD_LABELS else message


def _whole_or_none(value, what: str, off: float) -> int | float | None:
    """A form number as a whole number, or None when it is empty or the value that means "off"."""
    if value in (None, ""):
        return None
    number = _number(value, what)
    if number == off:
        return None
    return int(number) if number.is_integer() else number


def check_prompt(prompt) -> str:
    """The prompt, or NslmError when it is longer than a web form should carry (the model checks the rest)."""
    prompt = "" if prompt is None else str(prompt)
    if len(prompt) > MAX_PROMPT_CHARS:
        raise NslmError(f"The prompt is {len(prompt):,} characters long; keep it under {MAX_PROMPT_CHARS:,}.")
    return prompt


def check_sampling(temperature, top_k, top_p, max_tokens, seed) -> Sampling:
    """The form's values in the form generation takes them (top-k 0, top-p 1 and seed -1 mean off);
    the bounds are generation's own (`nslm.generate.api.check_options`), with its sentence."""
    sampling = Sampling(max_tokens=_whole_or_none(max_tokens, "Max tokens", off=float("nan")),
                        temperature=_number(temperature, "Temperature"),
                        top_k=_whole_or_none(top_k, "Top-k", off=0), top_p=_whole_or_none(top_p, "Top-p", off=1),
                        seed=_whole_or_none(seed, "Seed", off=-1))
    if isinstance(sampling.top_p, int):
        sampling.top_p = float(sampling.top_p)
    try:
        check_options(**sampling.kwargs())
    except NslmError as exc:
        raise NslmError(_labelled(str(exc))) from None
    if sampling.max_tokens > MAX_NEW_TOKENS:
        raise NslmError(f"Max tokens must be at most {MAX_NEW_TOKENS} on this page, not {sampling.max_tokens}.")
    return sampling


class ModelCache:
    """Loaded StoryModels by key, shared across sessions, with one lock per model."""

    def __init__(self, runs_dir: Path, capacity: int = 4):
        self.runs_dir = Path(runs_dir)
        self.capacity = capacity
        self._lock = threading.Lock()
        self._models: OrderedDict[str, tuple[object, threading.Lock, float]] = OrderedDict()

    def get(self, key: str):
        """(StoryModel, its lock) for a model key; NslmError when the folder is gone or unreadable."""
        path = model_path(key, self.runs_dir)
        weights = path / "model.safetensors"
        if not path.is_dir():
            self.forget(key)
            raise NslmError(f"The model folder '{path.name}' no longer exists (was it deleted?); "
                            "press Refresh in the Models tab and pick another model.")
        try:
            stamp = weights.stat().st_mtime
        except OSError:
            stamp = -1.0
        with self._lock:
            cached = self._models.get(key)
            if cached is not None and cached[2] == stamp:
                self._models.move_to_end(key)
                return cached[0], cached[1]
            model = nslm.load(str(path))
            lock = cached[1] if cached is not None else threading.Lock()
            self._models[key] = (model, lock, stamp)
            self._models.move_to_end(key)
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
            return model, lock

    def forget(self, key: str) -> None:
        with self._lock:
            self._models.pop(key, None)

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._models)


def truncation_note(model) -> str:
    """Said when the prompt did not fit the model's context window (it was cut from the left)."""
    context = getattr(model, "context_length", "?")
    return f"The prompt is longer than this model's context window ({context} tokens): only its end was used."


def end_note(ended: bool, max_tokens: int) -> str:
    return ("The story ended by itself." if ended else
            f"Stopped at the limit of {max_tokens} tokens before the story ended; raise Max tokens for more.")


def story_stream(model, prompt: str, sampling: Sampling):
    """Yield (story text so far, prompt truncated?) while generating; returns the finished Story."""
    stream = model.stream(prompt, **sampling.kwargs())
    truncated = bool(getattr(stream, "prompt_truncated", False))
    text = ""
    for piece in stream:
        text += piece
        yield text, truncated
    return stream.story


class NeighbourFinder:
    """The closest training story to a text, from the novelty index of the model's data folder."""

    def __init__(self, fallback_data: Path | None):
        self.fallback_data = Path(fallback_data) if fallback_data else None
        self._lock = threading.Lock()
        self._indexes: dict[Path, object] = {}
        # set by the app: the share embedded while the fallback folder's index is being built, else None
        self.build_progress: Callable[[Path | None], float | None] = lambda data: None

    def data_dir(self, model) -> Path | None:
        data = (getattr(model, "config", None) or {}).get("data") or {}
        for candidate in (data.get("path"), self.fallback_data):
            if candidate and NoveltyIndex.current_meta(candidate) is not None:  # an index, or a build's first part
                return Path(candidate)
        return None

    def html(self, model, story: str) -> str:
        """HTML for the 'closest training story' panel (escaped, shared 4-grams marked, coverage said)."""
        data = self.data_dir(model)
        building = self.build_progress(self.fallback_data) if data in (None, self.fallback_data) else None
        if building is not None and data is None:
            return (f"<p class='nslm-muted'>The novelty index of <code>{html.escape(str(self.fallback_data))}</code> is "
                    f"being built in the background ({building:.0%} done); the closest training story shows here "
                    "as soon as its first stories are embedded.</p>")
        if data is None:
            return ("<p class='nslm-muted'>No novelty index for this model's data folder yet: build it in the "
                    "<b>Evaluate</b> tab (<i>Build the novelty index</i>) to see the closest training story here.</p>")
        try:
            with self._lock:
                header = NoveltyIndex.current_meta(data)
                index, seen = self._indexes.get(data, (None, None))
                if index is None or seen != header:  # built, rebuilt or grown meanwhile: read it again
                    embedder = index.embedder if index is not None else None
                    index = NoveltyIndex.load(data)
                    index.embedder = embedder  # None: loaded on the first search
                    self._indexes[data] = (index, header)
                neighbour, cosine = index.nearest(story)
        except NslmError as exc:
            return f"<p class='nslm-warn'>{html.escape(str(exc))}</p>"
        share = shared_ngram_share(story, neighbour, 4)
        embedded, stories = len(index), int(index.meta.get("ngram_stories") or len(index))
        among = (f"the closest of all {stories:,} training stories" if embedded >= stories else
                 f"the closest of the first {embedded:,} of {stories:,} training stories (a partial index"
                 + (f", {building:.0%} built)" if building is not None else ")"))
        return (f"<div class='nslm-neighbour'><p><b>cosine similarity {cosine:.3f}</b> · {among} · "
                f"{share:.0%} of the story's 4-grams also in this training story (marked)</p>"
                f"<p>{mark_shared(neighbour, story, 4)}</p></div>")


