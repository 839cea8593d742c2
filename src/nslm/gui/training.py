"""Start, stop and resume `nslm train` as a detached process, and tell its state from the run folder.

The GUI never trains in its own process: closing the page or restarting the app leaves training
running, and every tab reads the same files. Besides the run folder (written by `nslm train`), the
launcher keeps `<runs>/.nslm-gui/<name>.json` (pid, command, start time) and `<name>.log` (the
process's output), so a run that dies before writing `status.json` still shows why.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import sys
import threading
import time
from pathlib import Path

from nslm.atomic import atomic_write_json
from nslm.errors import NslmError
from nslm.gui.processes import DetachedJobs
from nslm.gui.runs import child_folder, read_metrics, read_status
from nslm.train.checkpoint import has_checkpoint
from nslm.train.runlock import run_state, training_pid

ACTIVE_STATES = ("starting", "running", "stopping")

MAX_MORE_MINUTES = 60 * 24 * 30  # "Train more minutes" at most: 30 days


def default_run_name(preset: str) -> str:
    """'<preset>-<date>-<time>', a fresh folder name for a new run."""
    return f"{preset}-{dt.datetime.now():%Y%m%d-%H%M%S}"


class TrainingLauncher:
    """Runs at most one `nslm train` process for a runs folder and reports every run's state."""

    def __init__(self, runs_dir: Path, python: str = sys.executable):
        self.runs_dir = Path(runs_dir)
        self.meta_dir = self.runs_dir / ".nslm-gui"
        self.jobs = DetachedJobs(self.meta_dir, python)
        self._lock = threading.Lock()

    # ----- reading state -------------------------------------------------------------------------
    def _record(self, name: str) -> dict | None:
        return self.jobs.record(name)

    def _alive(self, record: dict) -> bool:
        """Whether the process this app launched for a run still lives (not a later one with its pid)."""
        return self.jobs.alive(record.get("pid"), record.get("pid_start"))

    def state(self, name: str) -> str:
        """starting | running | stopping | finished | stopped | failed | interrupted | missing."""
        run_dir = self.runs_dir / name
        record = self._record(name) or {}
        launched_alive = bool(record) and self._alive(record)
        status_path = run_dir / "status.json"
        status = read_status(run_dir)
        try:
            status_fresh = status_path.stat().st_mtime >= record.get("started", 0) - 1
        except OSError:
            status_fresh = False
        if launched_alive:
            if record.get("stopping"):
                return "stopping"
            if status and status_fresh and status.get("state") == "running":
                return "running"
            if status and status_fresh and status.get("state") in ("finished", "stopped", "failed"):
                return "stopping"  # saving its last checkpoint before exiting
            return "starting"
        if status:
            return run_state(run_dir, status)
        if record:
            return "stopped" if record.get("stopping") else "failed"
        return "missing" if not run_dir.exists() else "unknown"

    def active_run(self) -> str | None:
        """The name of the run being trained now (by this app or by `nslm train` elsewhere), or None."""
        names = set()
        names |= set(self.jobs.names())
        if self.runs_dir.is_dir():
            names |= {p.parent.name for p in self.runs_dir.glob("*/status.json")}
        for name in sorted(names):
            if self.state(name) in ACTIVE_STATES:
                return name
        return None

    def log_tail(self, name: str, lines: int = 15) -> str:
        """The last lines of the run's process output (progress bars collapsed to their last state)."""
        return self.jobs.log_tail(name, lines)

    def failure_reason(self, name: str) -> str:
        """The `error: ...` line of a failed run's output, or its last lines."""
        tail = self.log_tail(name, 30)
        errors = [line for line in tail.splitlines() if line.startswith("error:")]
        if errors:
            return errors[-1]
        return tail.splitlines()[-1] if tail else "no output"

    # ----- acting -----------------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> int:
        return self.jobs.spawn(name, ["train", *args])

    def _refuse_if_busy(self) -> None:
        active = self.active_run()
        if active:
            raise NslmError(
                f"Run '{active}' is still training: stop it or wait until it finishes before starting "
                "another (one run at a time keeps the machine responsive)."
            )

    def start(self, name: str, train_args: list[str]) -> str:
        """Start `nslm train <train_args> --out <runs>/<name>`; returns the run name."""
        with self._lock:
            run_dir = child_folder(self.runs_dir, name)
            self._refuse_if_busy()
            if (self.meta_dir / f"{name}.json").exists() and not run_dir.exists() and self.state(name) == "failed":
                # a start that failed before it made the run's folder (a bad setting): nothing to resume, so
                # the name is free again
                self.jobs.forget(name)
            if run_dir.exists() or (self.meta_dir / f"{name}.json").exists():
                raise NslmError(f"A run named '{name}' already exists: pick another name, or resume it.")
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            self._spawn(name, [*train_args, "--out", str(run_dir)])
            return name

    def _resumable(self, name: str) -> Path:
        run_dir = child_folder(self.runs_dir, name)
        state = self.state(name)
        if state in ACTIVE_STATES:
            raise NslmError(f"Run '{name}' is {state} already.")
        self._refuse_if_busy()
        if not (run_dir / "last" / "state.json").is_file():
            raise NslmError(f"Run '{name}' has no saved checkpoint to resume from (last/state.json is missing).")
        return run_dir

    def resume(self, name: str) -> str:
        """Continue a stopped or interrupted run from its last checkpoint, with its own budget."""
        with self._lock:
            run_dir = child_folder(self.runs_dir, name)
            state = self.state(name)
            if state in ACTIVE_STATES:
                raise NslmError(f"Run '{name}' is {state} already.")
            if state == "finished":
                raise NslmError(f"Run '{name}' has finished its budget; start a new run to train more.")
            self._refuse_if_busy()
            if not has_checkpoint(run_dir):
                raise NslmError(f"Run '{name}' has no saved checkpoint to resume from (last/state.json is missing).")
            self._spawn(name, ["--resume", str(run_dir)])
            return name

    def extend(self, name: str, minutes) -> str:
        """Train run `name` `minutes` more from its last checkpoint (the budget becomes elapsed + minutes,
        as `nslm train --resume RUN --max-minutes` counts it); returns a message for the page."""
        try:
            minutes = float(minutes)
        except (TypeError, ValueError):
            minutes = float("nan")
        if not 0 < minutes <= MAX_MORE_MINUTES:
            given = f", not {minutes:g}" if minutes == minutes else ""
            raise NslmError(f"Give the minutes to train as a number above 0 and at most {MAX_MORE_MINUTES:,} "
                            f"(30 days), e.g. 5{given}.")
        with self._lock:
            run_dir = self._resumable(name)
            elapsed = max([m["elapsed_s"] for m in read_metrics(run_dir)
                           if isinstance(m.get("elapsed_s"), (int, float))], default=0.0)
            total = elapsed / 60 + minutes
            self._spawn(name, ["--resume", str(run_dir), "--max-minutes", f"{total:.3f}"])
            return f"Training **{name}** {minutes:g} more minutes (to {total:.1f} minutes in all)."

    def stop(self, name: str) -> str:
        """Ask a run to save a checkpoint and exit (SIGTERM); returns a message for the page."""
        with self._lock:
            child_folder(self.runs_dir, name)
            state = self.state(name)
            if state not in ("starting", "running"):
                raise NslmError(f"Run '{name}' is not training (it is {state}).")
            record = self._record(name) or {}
            # the process holding the run's lock, or the one just launched that has not taken it yet
            pid = training_pid(self.runs_dir / name) or (record.get("pid") if self._alive(record) else None)
            if pid is None:
                raise NslmError(f"Run '{name}' has no live training process to stop.")
            os.kill(int(pid), signal.SIGTERM)
            record.update({"pid": int(pid), "stopping": True, "started": record.get("started", time.time())})
            atomic_write_json(self.meta_dir / f"{name}.json", record)
            return f"Stopping '{name}': it saves a checkpoint and exits; resume it any time."

