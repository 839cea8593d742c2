"""Run `nslm eval all` and build the novelty index from the page, each as its own process, one at a time.

Like training, the work outlives the page: the job's record and output live in `<reports>/.nslm-gui/`,
and any page reads its progress from there (the evaluation's per-step lines, the index's progress bar).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from nslm.atomic import read_json
from nslm.errors import NslmError
from nslm.eval.novelty import NoveltyIndex
from nslm.eval.steps import STEP_NAMES as STEPS
from nslm.gui.processes import DetachedJobs

INDEX_JOB = "novelty-index"
# Embedding speed of all-MiniLM-L6-v2 on 2-core CPUs, length-sorted (NoveltyIndex.build), until this machine's
# own build of the index has measured it: about 10 stories/s on the Zen 1 machine with an app in use beside it
# (12.0 idle) and 20.8 idle on the Zen 3 one (README "Benchmarks"). Estimates take the slower.
EMBED_STORIES_PER_S = 10.0
EMBED_STORIES_PER_S_FAST = 20.8
QUICK_STORIES = 1000  # what `nslm eval all --quick` embeds (EvalOptions.apply_quick)
# Everything but the index in a quick evaluation of a 1M model ("a few minutes on a 2-core CPU").
QUICK_OTHER_S = 180
STEP_LINE = re.compile(r"^\[(?P<model>[^\]]+)\] (?P<step>\w+) (?P<what>\.\.\.|done in (?P<secs>[\d.]+)s|"
                       r"skipped: (?P<why>.*)|failed: .*)$")
PERCENT = re.compile(r"novelty index:\s*(\d+)%")


@dataclass
class JobView:
    """What the page shows about one job."""

    name: str
    state: str  # running | finished | failed | none
    steps: dict[str, str] = field(default_factory=dict)  # evaluation: step -> running | done | skipped | failed
    detail: dict[str, str] = field(default_factory=dict)  # step -> seconds or the reason it was skipped
    percent: float | None = None  # index: share of stories embedded
    error: str = ""
    started: float = 0.0
    planned: tuple[str, ...] = STEPS  # evaluation: the measures asked for


def train_stories(data_dir: Path | None) -> int | None:
    """How many training stories a data folder holds (its meta.json), or None."""
    meta = read_json(Path(data_dir) / "meta.json") if data_dir else None
    train = (meta or {}).get("train")
    return train.get("stories") if isinstance(train, dict) and isinstance(train.get("stories"), int) else None


def index_coverage(data_dir: Path | None) -> tuple[int, int] | None:
    """(stories embedded, stories in train.txt) of the data folder's novelty index, or None when it has none."""
    if data_dir is None:
        return None
    try:
        meta = NoveltyIndex.load(data_dir).meta
    except (NslmError, OSError, ValueError):
        return None
    return int(meta.get("stories", 0)), int(meta.get("ngram_stories") or meta.get("stories", 0))


def measured_rate(data_dir: Path | None) -> float | None:
    """Stories/s that this machine's build of the data folder's index measured (its saved progress, or the
    finished index's record), or None before it has embedded anything."""
    if data_dir is None:
        return None
    folder = NoveltyIndex.default_folder(data_dir)
    for record, done in ((read_json(NoveltyIndex.partial_folder(folder) / "progress.json"), "embedded"),
                         (read_json(folder / "meta.json"), "stories")):
        if not isinstance(record, dict):
            continue
        stories, seconds = record.get(done), record.get("seconds", record.get("build_seconds"))
        if isinstance(stories, int) and isinstance(seconds, (int, float)) and stories > 0 and seconds >= 5:
            return stories / seconds
    return None


def build_seconds(stories: int, data_dir: Path | None = None) -> float:
    """Seconds to embed `stories`: at the rate this machine measured for the data folder, else the slower
    2-core figure."""
    return stories / (measured_rate(data_dir) or EMBED_STORIES_PER_S)


def estimate_seconds(data_dir: Path | None, quick: bool) -> float | None:
    """Rough time of an evaluation: embedding what the index lacks, plus the other steps of a quick one;
    a full evaluation scores every BLiMP pair and the whole validation set, so only its index part is known."""
    total = train_stories(data_dir)
    if total is None:
        return QUICK_OTHER_S if quick else None
    covered = (index_coverage(data_dir) or (0, 0))[0]
    wanted = min(QUICK_STORIES, total) if quick else total
    return build_seconds(max(0, wanted - covered), data_dir) + (QUICK_OTHER_S if quick else 0)


class EvaluationJobs:
    """At most one evaluation or index build at a time for this app."""

    def __init__(self, reports_dir: Path, jobs: DetachedJobs | None = None):
        self.reports_dir = Path(reports_dir)
        self.jobs = jobs or DetachedJobs(self.reports_dir / ".nslm-gui")
        self._lock = threading.Lock()

    def active(self) -> str | None:
        for name in self.jobs.names():
            if self.jobs.alive((self.jobs.record(name) or {}).get("pid")):
                return name
        return None

    def _refuse_if_busy(self) -> None:
        active = self.active()
        if active:
            what = "the novelty index is being built" if active == INDEX_JOB else f"'{active}' is being evaluated"
            raise NslmError(f"Wait until {what}: one evaluation job runs at a time, so each gets the whole CPU.")

    def evaluate(self, model_dir: Path, data_dir: Path | None, quick: bool, steps=STEPS) -> str:
        """Start `nslm eval all` on one model with `steps` into `<reports>/<model name>`; returns the job name."""
        steps = [step for step in steps or () if step in STEPS]
        if steps == ["judge"]:  # the app starts `eval all` without a grader, so the judge alone would do nothing
            raise NslmError("The LLM judge needs a grader, which this page does not take: run `nslm eval all "
                            "--judge-url URL` on the command line, or tick another measure.")
        if not steps:
            raise NslmError("Tick at least one measure to evaluate.")
        with self._lock:
            self._refuse_if_busy()
            out = self.reports_dir / model_dir.name
            args = ["eval", "all", "--model", str(model_dir), "--out", str(out)]
            args += ["--data", str(data_dir)] if data_dir else []
            args += ["--quick"] if quick else []
            for step in STEPS:
                args += ["--skip", step] if step not in steps else []
            self.jobs.spawn(model_dir.name, args, kind="evaluate", done_file=str(out / "results.json"),
                            quick=quick, steps=steps)
            return model_dir.name

    def build_index(self, data_dir: Path | None, background: bool = False) -> str:
        """Start `nslm eval novelty --data DIR` (the index of every training story); returns the job name.
        `background`: at a lower priority, so the app stays quick while it runs."""
        if data_dir is None or not (Path(data_dir) / "train.txt").is_file():
            raise NslmError("The app has no data folder with train.txt; start it with `nslm gui --data DIR`.")
        with self._lock:
            self._refuse_if_busy()
            self.jobs.spawn(INDEX_JOB, ["eval", "novelty", "--data", str(data_dir)], kind="index",
                            done_file=str(NoveltyIndex.default_folder(data_dir) / "meta.json"),
                            nice=10 if background else 0, data=str(Path(data_dir).resolve()))
            return INDEX_JOB

    def index_progress(self, data_dir: Path | None) -> float | None:
        """The share of stories embedded so far while an index of `data_dir` is being built, else None."""
        record = self.jobs.record(INDEX_JOB) or {}
        if data_dir is None or not record.get("data") or not self.jobs.alive(record.get("pid")):
            return None
        if Path(record["data"]).resolve() != Path(data_dir).resolve():  # the app may hold it as a relative path
            return None
        return self.view(INDEX_JOB).percent or 0.0

    def build_index_at_start(self, data_dir: Path | None) -> str:
        """What `nslm gui --build-index` does: start a background build of the data folder's whole index
        unless it has one, one is being built, or there is nothing to index; returns a line saying which."""
        if data_dir is None or not (Path(data_dir) / "train.txt").is_file():
            return f"novelty index: not built, {data_dir or 'no data folder'} has no train.txt"
        coverage = index_coverage(data_dir)
        if coverage is not None and coverage[0] >= coverage[1]:
            return f"novelty index: {data_dir} has one of all {coverage[1]:,} training stories"
        progress = self.index_progress(data_dir)
        if progress is not None:
            return f"novelty index: already being built for {data_dir} in the background ({progress:.0%} done)"
        try:
            self.build_index(data_dir, background=True)
        except NslmError as exc:
            return f"novelty index: not started now ({exc})"
        stories = train_stories(data_dir)
        done = coverage[0] if coverage is not None else 0  # a stopped build's stories: it goes on from there
        left = max(0, (stories or 0) - done)
        if measured_rate(data_dir):
            minutes = max(1, round(build_seconds(left, data_dir) / 60))
            about = f", about {minutes} minute{'s' if minutes > 1 else ''} here"
        else:
            fast, slow = (max(1, round(left / rate / 60)) for rate in (EMBED_STORIES_PER_S_FAST, EMBED_STORIES_PER_S))
            span = f"{fast}-{slow} minutes" if fast < slow else f"{slow} minute{'s' if slow > 1 else ''}"
            about = f", about {span} on a 2-core CPU"
        about = about if stories else ""
        going_on = f"going on from the {done:,} stories embedded before, " if done else ""
        return (f"novelty index: building it for {data_dir} in the background{about}; {going_on}the closest "
                "training story shows from its first stories on, among those embedded so far")

    def view(self, name: str) -> JobView:
        record = self.jobs.record(name)
        if not record:
            return JobView(name, "none")
        started = float(record.get("started", 0))
        view = JobView(name, "running", started=started, planned=tuple(record.get("steps") or STEPS))
        log = self.jobs.log_text(name)
        if record.get("kind") == "index":
            percents = PERCENT.findall(log)
            view.percent = int(percents[-1]) / 100 if percents else 0.0
        else:
            _read_steps(log, view)
        if not self.jobs.alive(record.get("pid")):
            view.state = "finished" if _written_after(record.get("done_file"), started) else "failed"
            errors = [line for line in log.splitlines() if line.startswith("error:")]
            view.error = errors[-1] if errors else ""
        return view


def _read_steps(log: str, view: JobView) -> None:
    for line in log.splitlines():
        match = STEP_LINE.match(line.strip())
        if not match or match["step"] not in STEPS:
            continue
        step, what = match["step"], match["what"]
        if what == "...":
            view.steps[step] = "running"
        elif match["secs"]:
            view.steps[step], view.detail[step] = "done", f"{float(match['secs']):.0f} s"
        elif match["why"] is not None:
            view.steps[step], view.detail[step] = "skipped", match["why"]
        else:
            view.steps[step] = "failed"


def _written_after(path, started: float) -> bool:
    try:
        return bool(path) and Path(path).stat().st_mtime >= started - 1
    except OSError:
        return False
