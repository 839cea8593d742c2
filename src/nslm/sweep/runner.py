"""Running a sweep: an Optuna study whose trials are ordinary nslm runs under the sweep folder.

A trial is one combination of the varied settings, trained once per seed with the project's own training
code (`prepare_run` / `train_run`) in `trials/<name>/seed-<n>/`, then measured with the `nslm eval` steps the
spec names. Its value, which the study minimises, is the mean over seeds of the selection split's bits per
byte at the kept checkpoint: the dev split where the data folder has one, else validation (older folders).

Grid sweeps enqueue every combination once when the study is created; a worker takes the next waiting
trial, which the storage hands to exactly one worker. Search sweeps ask TPE for each new trial. A trial
killed mid-way stays RUNNING in the study with nobody holding its folder's lock: the next worker on that
machine marks it failed and enqueues its settings again, and the retry finds the finished seeds done and
resumes the cut one from its checkpoint.

Sweep folder: `spec.toml` (the spec as given), `sweep.json` (checked spec, storage, study name),
`study.sqlite` (the default storage), `trials/<name>/seed-<n>/` (run folders) with `seed-<n>.eval/` beside
them (the measures), and `report/` from `nslm sweep report`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import optuna
from optuna.trial import TrialState

from nslm import __version__
from nslm.atomic import atomic_write_json, atomic_write_text
from nslm.errors import NslmError
from nslm.eval.report import evaluate_model, jsonable
from nslm.models import ModelConfig, build_model
from nslm.sweep.spec import Range, SweepSpec
from nslm.train.checkpoint import has_checkpoint
from nslm.train.metrics import read_metrics
from nslm.train.run import prepare_run, read_run_config, train_run

SWEEP_FILE = "sweep.json"
SPEC_FILE = "spec.toml"
DEFAULT_DB = "study.sqlite"
DEFAULT_STUDY = "nslm-sweep"
LOCK_NAME = ".trial.lock"
HOST = socket.gethostname()


class SweepStopped(Exception):
    """The trial's training was stopped by Ctrl-C or SIGTERM; the sweep ends and resumes later."""


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / DEFAULT_DB).resolve()}"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The Optuna storage at `url` (any database URL Optuna supports), as one sentence when it cannot open."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own progress lines say what happens
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}  # waits out other workers' writes
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as exc:  # sqlalchemy and drivers raise many kinds; every one means "cannot open"
        raise NslmError(f"cannot open the study storage {url} ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None


# ---------------------------------------------------------------- the sweep folder
def same_spec(stored: dict | None, spec: SweepSpec) -> bool:
    """Whether a recorded spec is `spec`; read back through SweepSpec, so one recorded before a field existed
    compares with that field's default."""
    return stored is not None and jsonable(SweepSpec.from_dict(stored).to_dict()) == jsonable(spec.to_dict())


def check_out(out: Path, spec: SweepSpec) -> str:
    """'new' or 'resume' for the sweep folder `out`, or an NslmError (another sweep, foreign, unwritable)."""
    if out.exists() and not out.is_dir():
        raise NslmError(f"--out {out} is a file; choose a folder for the sweep")
    if (out / SWEEP_FILE).is_file():
        recorded = read_sweep(out)
        if not same_spec(recorded["spec"], spec):
            raise NslmError(f"{out} holds a sweep with another spec; continue it with its own spec "
                            f"({out / SPEC_FILE}) or choose another --out")
        return "resume"
    if out.exists() and any(out.iterdir()):
        raise NslmError(f"--out {out} exists and is not a sweep folder; choose another --out")
    check_writable(out)
    return "new"


def check_writable(out: Path) -> None:
    """NslmError unless `out` (or the nearest folder above it that exists) can be written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NslmError(f"{out} is a file; choose a folder")
    parent = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
    try:  # a real try, since permission bits say nothing to root or on a read-only mount
        os.rmdir(tempfile.mkdtemp(prefix=".nslm-write-check-", dir=parent))
    except OSError:
        raise NslmError(f"cannot write {out}: {parent} is not a writable folder; choose another place") from None


def read_sweep(out: Path) -> dict:
    path = Path(out) / SWEEP_FILE
    if not path.is_file():
        raise NslmError(f"{out} is not a sweep folder (no {SWEEP_FILE}); start one with nslm sweep run SPEC --out {out}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError):
        raise NslmError(f"{path} is corrupt (not JSON)") from None
    if not isinstance(record, dict) or not {"spec", "storage", "study"} <= set(record):
        raise NslmError(f"{path} is corrupt: it needs spec, storage and study as nslm sweep run writes them")
    stored = record["storage"]
    if isinstance(stored, str) and stored.startswith("sqlite:///") and stored != default_storage(Path(out)) \
            and not Path(stored.removeprefix("sqlite:///")).exists() and (Path(out) / DEFAULT_DB).is_file():
        record["storage"] = default_storage(Path(out))  # the folder was moved or copied with its own study
    return record


def create_sweep(spec_path: Path, spec: SweepSpec, out: Path, storage: str | None, study_name: str | None) -> optuna.Study:
    """Make the sweep folder and its study (grid points enqueued), or join the study it already has."""
    state = check_out(out, spec)
    if state == "resume":
        record = read_sweep(out)
        if storage and storage != record["storage"]:
            raise NslmError(f"{out} keeps its study in {record['storage']}; drop --storage or give that one")
        return load_study(record["storage"], record["study"], spec)
    url = storage or default_storage(out)
    name = study_name or DEFAULT_STUDY
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        study = _create_or_join(url, name, spec, out)
    except BaseException:
        if made:  # nothing of ours may stay behind when the study cannot be made
            shutil.rmtree(out, ignore_errors=True)
        raise
    atomic_write_text(out / SPEC_FILE, spec_path.read_text(encoding="utf-8"))
    atomic_write_json(out / SWEEP_FILE, {"spec": jsonable(spec.to_dict()), "storage": url, "study": name,
                                         "nslm_version": __version__, "created": time.strftime("%Y-%m-%d %H:%M:%S")})
    return study


def _create_or_join(url: str, name: str, spec: SweepSpec, out: Path) -> optuna.Study:
    storage = open_storage(url)
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="minimize", sampler=sampler_for(spec))
    except optuna.exceptions.DuplicatedStudyError:
        study = load_study(storage, name, spec)
        if not same_spec(study.user_attrs.get("spec"), spec):
            raise NslmError(f"the storage {url} already holds a study {name!r} with another spec; "
                            "pass --study NAME for a new one") from None
        return study
    # the queue is filled before the spec is recorded, so a worker that sees the spec sees every grid point
    for settings in (spec.grid_points() if spec.grid else []):
        study.enqueue_trial(settings, user_attrs={"queued": True})
    study.set_user_attr("out", str(out.resolve()))
    study.set_user_attr("spec", jsonable(spec.to_dict()))
    return study


def load_study(storage, name: str | None, spec: SweepSpec | None = None) -> optuna.Study:
    """The study `name` in `storage` (a URL or an opened storage); with no name, the storage's only study.
    With the `spec`, the study samples new search trials with its TPE sampler."""
    url = storage if isinstance(storage, str) else None
    if isinstance(storage, str):
        path = storage[len("sqlite:///"):] if storage.startswith("sqlite:///") else None
        if path is not None and not Path(path).is_file():  # opening would create an empty one
            raise NslmError(f"there is no study storage at {path}; start the sweep with nslm sweep run SPEC --out DIR")
        storage = open_storage(storage)
    with _reading(f"the study storage {url}" if url else "the study storage"):
        names = [s.study_name for s in storage.get_all_studies()]
    if name is None:
        if len(names) != 1:
            raise NslmError(f"the storage holds {len(names)} studies ({', '.join(names) or 'none'}); name one with --study")
        name = names[0]
    if name not in names:
        raise NslmError(f"the storage holds no study {name!r}; its studies: {', '.join(names) or 'none'}")
    sampler = sampler_for(spec) if spec is not None else None
    with _reading(f"study {name!r} in {url}" if url else f"study {name!r}"):
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler)


def study_spec(study: optuna.Study) -> SweepSpec:
    """The spec a study was created with (workers on other machines read it from the storage)."""
    for _ in range(100):  # the creator records it just after the grid is enqueued
        with _reading(f"study {study.study_name!r}"):
            spec = study.user_attrs.get("spec")
        if spec:
            if not isinstance(spec, dict):
                raise NslmError(f"study {study.study_name!r} is damaged: its recorded spec is not a table")
            return SweepSpec.from_dict(spec)
        time.sleep(0.1)
    raise NslmError(f"study {study.study_name!r} was not made by nslm sweep run (it records no spec)")


@contextlib.contextmanager
def _reading(what: str) -> Iterator[None]:
    """What Optuna raises while it reads a damaged database (text that is not JSON, a value of the wrong type
    in a column, a missing table: JSONDecodeError, ValueError, AssertionError, SQLAlchemy's errors...) as one
    NslmError naming `what` it read."""
    try:
        yield
    except NslmError:
        raise
    except Exception as exc:  # every one means "cannot be read", as in open_storage
        first = (str(exc).splitlines() or [""])[0][:200]
        detail = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        raise NslmError(f"{what} is damaged and cannot be read ({detail})") from None


# what a finished trial's "runs" record must hold for progress and reports: each run's field and its kind
_NUMBER = (int, float)
RUN_FIELDS = {"seed": int, "folder": str, "selected_by": str, "params": dict, "kept": dict, "curve": list,
              "tokens": _NUMBER, "elapsed_s": _NUMBER, "flops_per_token": _NUMBER, "select_bpb": _NUMBER}


def sweep_trials(study: optuna.Study) -> list:
    """The study's trials, read once, each finished one's records checked (settings, runs, a finite value):
    an NslmError naming the study and trial instead of a traceback from a damaged database."""
    with _reading(f"study {study.study_name!r}"):
        trials = study.get_trials(deepcopy=False)
    for t in trials:
        problem = _record_problem(t.value, t.user_attrs) if t.state == TrialState.COMPLETE else None
        if problem:
            raise NslmError(f"study {study.study_name!r} is damaged: trial {t.number} {problem}")
    return trials


def _finite(value) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool) and value == value and abs(value) != float("inf")


def _record_problem(value, attrs: dict) -> str | None:
    if not _finite(value):
        return f"has the value {value!r}, not a finite number"
    if not isinstance(attrs.get("settings"), dict):
        return "records no settings"
    runs = attrs.get("runs")
    if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) for r in runs):
        return "records no runs"
    for run in runs:
        for field, kind in RUN_FIELDS.items():
            if not isinstance(run.get(field), kind) or (kind is _NUMBER and not _finite(run[field])):
                return f"records a run whose {field} is {run.get(field)!r}"
        if not all(_finite(run["params"].get(k)) for k in ("total", "non_embedding")):
            return "records a run without its parameter counts"
    if "seconds" in attrs and not _finite(attrs["seconds"]):
        return f"records {attrs['seconds']!r} seconds"
    return None


# ---------------------------------------------------------------- trials
def trial_name(settings: dict) -> str:
    """A folder name for a combination of settings: readable, and the same for the same settings."""
    words = "_".join(f"{k.split('.')[-1]}-{Path(v).name if k == 'data' else v}" for k, v in settings.items())
    words = "".join(c if c.isalnum() or c in "-_." else "-" for c in words)[:80]
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:6]
    return f"{words}-{digest}" if words else digest


@contextlib.contextmanager
def trial_lock(folder: Path) -> Iterator[bool]:
    """Hold `folder/.trial.lock` while a worker runs the trial (the kernel drops it if the worker dies); yields
    False, holding nothing, when another worker holds it: SQLite has no row locks, so two workers asking at
    once can both be handed the same queued trial, and only one of them may run it."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def lock_is_free(folder: Path) -> bool:
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def recover_orphans(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials of this machine whose worker is gone (no one holds their lock) and enqueue their
    settings again; returns the numbers of the trials recovered."""
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get("host") != HOST or "folder" not in attrs or not lock_is_free(Path(attrs["folder"])):
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError):  # another worker recovered it first
            continue
        study.enqueue_trial(attrs["settings"], user_attrs={"queued": True, "retry_of": trial.number})
        recovered.append(trial.number)
    return recovered


def _suggest(trial: optuna.Trial, spec: SweepSpec) -> dict:
    settings = {}
    for key in spec.varied:
        value = spec.grid.get(key) if spec.grid else spec.search[key]
        if isinstance(value, Range):
            suggest = trial.suggest_int if value.integer else trial.suggest_float
            settings[key] = suggest(key, value.low, value.high, log=value.log)
        else:
            settings[key] = trial.suggest_categorical(key, value)
    return settings


def _counted(trials) -> list:
    """Trials that count against a search's budget: not the failed ones that were retried, not unused ones."""
    retried = {t.user_attrs.get("retry_of") for t in trials}
    return [t for t in trials if not t.user_attrs.get("unused") and t.number not in retried]


def run_seed(spec: SweepSpec, settings: dict, seed: int, run_dir: Path) -> dict:
    """Train (or finish, or skip when done) one seed's run folder; returns what the study records of it."""
    status = _status(run_dir)
    resumed_from = None
    if status.get("state") != "finished":
        if has_checkpoint(run_dir):
            resumed_from = json.loads((run_dir / "last" / "state.json").read_text())["step"]
            config, folder = prepare_run(resume=run_dir, data=spec.data_for(settings))
            result = train_run(config, folder, resume=True)
        else:
            if run_dir.exists():  # cut before its first checkpoint: nothing to resume
                shutil.rmtree(run_dir)
            config, folder = prepare_run(out=run_dir, data=spec.data_for(settings), preset=spec.preset_for(settings),
                                         overrides=spec.overrides(settings),
                                         train_options=dict(spec.train_options(), seed=seed))
            result = train_run(config, folder)
        if result["state"] != "finished" or result.get("signal"):
            # a stop that came during the run's last evaluation or save: the run is complete, the sweep still ends
            raise SweepStopped(f"training of {run_dir} stopped at step {result['step']}")
    record = run_record(run_dir, seed)
    record["resumed_from_step"] = resumed_from
    record["measures"] = _measures(spec, run_dir, spec.data_for(settings))
    return record


def _status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def run_record(run_dir: Path, seed: int) -> dict:
    """A finished run's figures: sizes, compute, the kept checkpoint's dev and validation figures, the curve."""
    config = read_run_config(run_dir)
    metrics = read_metrics(run_dir)
    evals = [r for r in metrics if r.get("event") == "eval"]
    if not evals:
        raise NslmError(f"{run_dir} finished without an evaluation; its metrics.jsonl holds none")
    kept = [r for r in evals if r.get("best")][-1] if any(r.get("best") for r in evals) else evals[-1]
    last = evals[-1]
    select = "dev" if kept.get("selected_by") == "dev" else "val"
    model = build_model(ModelConfig.from_dict(config["model"]))
    data = config.get("data", {})
    train = [(r["tokens"], r["train_loss"]) for r in metrics
             if r.get("event") == "train" and r.get("train_loss") is not None]
    step = max(1, len(train) // 200)  # at most about 200 points: the report must stay small
    return {
        # what the run trained on, so a report (and a study built from it) needs no run folder
        "data": {"path": data.get("path"), "tokenizer": f"{data.get('tokenizer_kind')}-{data.get('vocab_size')}",
                 **{split: {k: data[split].get(k) for k in ("tokens", "stories", "bytes")}
                    for split in ("train", "dev", "valid") if isinstance(data.get(split), dict)}},
        "train_curve": [{"tokens": t, "train_loss": loss} for t, loss in train[::step]],
        "seed": seed, "folder": str(run_dir), "params": config["params"],
        "flops_per_token": model.flops_per_token(), "selected_by": "dev" if select == "dev" else "valid",
        "step": last["step"], "tokens": last["tokens"], "elapsed_s": last["elapsed_s"],
        "kept": {k: kept.get(k) for k in ("step", "tokens", "elapsed_s", "dev_loss", "dev_bpb", "val_loss", "val_bpb")},
        "select_bpb": kept.get(f"{select}_bpb") if kept.get(f"{select}_bpb") is not None else kept.get(f"{select}_loss"),
        "curve": [{k: r.get(k) for k in ("step", "tokens", "elapsed_s", "dev_bpb", "val_bpb", "dev_loss", "val_loss")}
                  for r in evals],
    }


def _measures(spec: SweepSpec, run_dir: Path, data: str) -> dict:
    """The headline figures of the spec's `nslm eval` steps on the kept checkpoint, computed once per run."""
    if not spec.measures["steps"]:
        return {}
    out = run_dir.parent / f"{run_dir.name}.eval"
    done = out / "summary.json"
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    out.mkdir(exist_ok=True)
    result = evaluate_model(str(run_dir), f"{run_dir.parent.name}-{run_dir.name}", data, spec.eval_options(), out)
    summary = jsonable({"summary": result["summary"], "standard_errors": result["standard_errors"],
                        "skipped": result["skipped"]})
    atomic_write_json(out / "results.json", jsonable(result))
    atomic_write_json(done, summary)
    return summary


# what run_trial returns when the trial it was handed is another worker's
TAKEN = "taken"


def _finished(study: optuna.Study, number: int) -> bool:
    return any(t.number == number and t.state.is_finished() for t in study.get_trials(deepcopy=False))


def run_trial(study: optuna.Study, spec: SweepSpec, out: Path) -> optuna.trial.FrozenTrial | str | None:
    """Take one trial and run it; None when the sweep has nothing left for this worker, TAKEN when another
    worker runs the trial this one was handed."""
    if spec.grid and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        return None
    if spec.search and len(_counted(study.get_trials(deepcopy=False))) >= spec.trials:
        return None
    trial = study.ask()
    enqueued = bool(trial.user_attrs.get("queued"))
    over = spec.search and not enqueued and len(_counted([t for t in study.get_trials(deepcopy=False)
                                                          if t.number <= trial.number])) > spec.trials
    if (spec.grid and not enqueued) or over:  # another worker took the last one between our look and our ask
        trial.set_user_attr("unused", True)
        study.tell(trial, state=TrialState.PRUNED)
        return None
    settings = _suggest(trial, spec)
    folder = out / "trials" / trial_name(settings)
    try:
        with trial_lock(folder) as mine:
            if not mine or _finished(study, trial.number):
                return TAKEN  # another worker was handed the same trial and runs (or ran) it
            for key, value in {"settings": settings, "folder": str(folder), "host": HOST, "pid": os.getpid()}.items():
                trial.set_user_attr(key, value)
            started = time.time()
            runs = [run_seed(spec, settings, seed, folder / f"seed-{seed}") for seed in spec.seeds]
            trial.set_user_attr("runs", jsonable(runs))
            trial.set_user_attr("seconds", round(time.time() - started, 1))
            value = sum(r["select_bpb"] for r in runs) / len(runs)
            return study.tell(trial, value)
    except (SweepStopped, KeyboardInterrupt):
        # the settings go back into the queue now, so the next run continues this trial from its checkpoints
        study.tell(trial, state=TrialState.FAIL)
        study.enqueue_trial(settings, user_attrs={"queued": True, "retry_of": trial.number})
        raise
    except NslmError as exc:  # this trial cannot train (e.g. its loss diverged): record why, go on with others
        trial.set_user_attr("error", str(exc))
        return study.tell(trial, state=TrialState.FAIL)


def progress(study: optuna.Study, spec: SweepSpec) -> dict:
    """Where a sweep stands: trials done of all, running, failed, the best so far and the time left."""
    trials = sweep_trials(study)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    running = [t for t in trials if t.state == TrialState.RUNNING]
    total = spec.total_trials()
    best = min(done, key=lambda t: t.value) if done else None
    seconds = [t.user_attrs["seconds"] for t in done if "seconds" in t.user_attrs]
    left = max(0, total - len(done)) * statistics.fmean(seconds) / max(1, len(running)) if seconds else None
    return {"done": len(done), "total": total, "running": len(running),
            "failed": sum(t.state == TrialState.FAIL and t.number not in retried for t in trials),
            "best_value": best.value if best else None, "best_settings": best.user_attrs["settings"] if best else None,
            "best_trial": best.number if best else None, "selected_by": _selection(best) if best else None,
            "eta_s": left}


def _shown(settings: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def progress_line(study: optuna.Study, spec: SweepSpec, trial: optuna.trial.FrozenTrial) -> str:
    """After a trial: its result, trials done of all, the best so far and an estimate of the time left."""
    shown = _shown(trial.user_attrs.get("settings", {}))
    if trial.state != TrialState.COMPLETE:
        head = f"trial {trial.number} ({shown}) failed: {trial.user_attrs.get('error', 'see above')}"
    else:
        head = f"trial {trial.number} ({shown}): {trial.value:.4f} bits per byte ({_selection(trial)})"
    state = progress(study, spec)
    line = f"{head} | {state['done']}/{state['total']} done"
    if state["best_value"] is not None:
        line += f", best {state['best_value']:.4f} ({_shown(state['best_settings'])})"
    if state["eta_s"] is not None:
        line += f", about {state['eta_s'] / 60:.1f} min left"
    return line


def _selection(trial) -> str:
    runs = trial.user_attrs.get("runs") or [{}]
    return "dev split" if runs[0].get("selected_by") == "dev" else "validation split: the data has no dev split"


def open_sweep(folder: Path) -> tuple[optuna.Study, SweepSpec]:
    """The study and spec of the sweep folder `folder` (what `report` and the GUI read)."""
    record = read_sweep(folder)
    study = load_study(record["storage"], record["study"])
    return study, study_spec(study)


def work(study: optuna.Study, spec: SweepSpec, out: Path, max_trials: int | None = None, log=None) -> int:
    """Run trials until the sweep is done (or `max_trials` of them); returns how many this worker ran."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    out = Path(out).absolute()  # trial folders are recorded in the study, read from any working folder
    sweep_trials(study)  # a damaged study is refused before a trial starts
    with _sigterm_stops():
        return _work_loop(study, spec, out, max_trials, log)


@contextlib.contextmanager
def _sigterm_stops():
    """SIGTERM ends the sweep as Ctrl-C does, wherever it comes: while a run trains, the trainer's own handler
    takes it (it saves a checkpoint first); between runs, during measures or reports, it stops at once."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _work_loop(study: optuna.Study, spec: SweepSpec, out: Path, max_trials: int | None, log) -> int:
    ran = 0
    while max_trials is None or ran < max_trials:
        for number in recover_orphans(study):  # before each trial: a worker beside this one may have died
            log(f"trial {number} was cut off; its settings are queued again and resume from their checkpoints")
        trial = run_trial(study, spec, out)
        if trial is None:
            break
        if trial is TAKEN:
            continue
        ran += 1
        log(progress_line(study, spec, trial))
    return ran


def sampler_for(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    """TPE for a search (seeded, so a sweep is repeatable); grid trials come from the queue, not the sampler."""
    return optuna.samplers.TPESampler(seed=spec.sampler_seed)

