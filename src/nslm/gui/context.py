"""What every tab shares: the app's folders and long-lived helpers (`Context`), and how a handler turns
a user mistake into one sentence on the page."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from nslm.errors import NslmError
from nslm.eval.human import RatingStore
from nslm.gui import runs as runlib
from nslm.gui.evaluation import EvaluationJobs
from nslm.gui.storytelling import ModelCache, NeighbourFinder
from nslm.gui.training import TrainingLauncher

log = logging.getLogger("nslm.gui")

# Said instead of an internal error's text, which means nothing to a user (the log has the details).
UNEXPECTED = "Something went wrong on the server; the app's log has the details. Try again or pick another model."


def warn(message: str) -> str:
    return f"⚠ {message}"


def friendly(on_error):
    """Decorator: an NslmError (or, as a last resort, any error) becomes `on_error(message)`, a dict of
    component values, instead of breaking the page."""

    def wrap(fn):
        @functools.wraps(fn)
        def wrapper(*args):
            try:
                return fn(*args)
            except NslmError as exc:
                return on_error(warn(str(exc)))
            except Exception:  # the app must keep serving whatever one request hits
                log.exception("%s failed", fn.__name__)
                return on_error(warn(UNEXPECTED))

        return wrapper

    return wrap


def by_component(components: list, fn):
    """A handler for inputs `components` that calls `fn({component: value})` (Gradio passes them in order)."""

    def handler(*values):
        return fn(dict(zip(components, values)))

    handler.__name__ = getattr(fn, "__name__", "handler")
    return handler


def duration(seconds) -> str:
    if not isinstance(seconds, (int, float)) or seconds != seconds or seconds < 0:
        return "—"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


@dataclass
class Context:
    """What every handler needs: folders, the process launchers, loaded models, the novelty index."""

    runs_dir: Path
    data_dir: Path | None
    db_path: Path | None
    reports_dir: Path | None
    launcher: TrainingLauncher
    cache: ModelCache
    neighbours: NeighbourFinder
    evaluations: EvaluationJobs | None = None  # None when the app has no reports folder
    sweeps_dir: Path | None = None  # the Sweeps tab's folder of `nslm sweep run --out` folders

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
        """The runs folder's runs, newest first."""
        return [e.name for e in self.entries() if e.kind == "run"]

    def rating_store(self) -> RatingStore:
        return RatingStore(self.db_path)  # None: the store's default, $NSLM_HOME/ratings.sqlite
