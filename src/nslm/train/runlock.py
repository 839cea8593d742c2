"""Which process trains a run folder: a lock file held by the trainer, not a pid that the system reuses.

The trainer holds an flock on `<run>/.train.lock` (its pid written inside) for as long as it trains. The
kernel drops the lock when the process dies, even by kill -9, so "running" in status.json is believed only
while someone holds the lock; a pid alone may by now belong to any other process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Iterator

from nslm.errors import NslmError

LOCK_NAME = ".train.lock"


def process_start(pid) -> int | None:
    """When process `pid` started (clock ticks since boot, from /proc), or None when unknown or gone.
    Together with the pid it names one process: a reused pid has a later start."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError, TypeError):
        return None
    # the fields after the parenthesised command name; the start time is field 22 of the whole line
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[19]) if len(fields) > 19 else None


def same_process(pid, start) -> bool:
    """True while process `pid` is alive and, when `start` was recorded, is the process that started then."""
    try:
        pid = int(pid)
        if pid <= 0:  # 0 and -1 would address a whole process group
            return False
        os.kill(pid, 0)
    except (TypeError, ValueError, OverflowError, ProcessLookupError):
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    now = process_start(pid)
    if start is not None and now is not None and now != start:
        return False  # the pid was reused by a later process
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return False


@contextlib.contextmanager
def hold_run(run_dir: str | Path, wait_s: float = 2.0) -> Iterator[None]:
    """Hold the run's training lock for the block; refuse when another live process trains the run.

    Waits up to `wait_s` for the lock, because a reader checking it (`training_pid`) holds it for an instant.
    """
    path = Path(run_dir) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = _holder(fd)
                    raise NslmError(f"{run_dir} is being trained by another process"
                                    f"{f' (pid {holder})' if holder else ''}; stop it first or wait until it ends") from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "start": process_start(os.getpid())}).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> int | None:
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return int(record["pid"]) if same_process(record["pid"], record.get("start")) else None
    except (ValueError, KeyError, TypeError, OSError):
        return None


def training_pid(run_dir: str | Path) -> int | None:
    """The pid of the live process that trains `run_dir` now, or None when no process does (any more)."""
    try:
        fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None  # never trained by this version, or the folder is gone
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(fd)
        return None  # nobody holds it: the process that held it has ended, however it ended
    finally:
        os.close(fd)


def run_state(run_dir: str | Path, status: dict) -> str:
    """The state of a run from its status.json dict: "running" only while a process trains it, else
    "interrupted" for a run whose process ended without saying so (killed, crashed, machine restarted)."""
    state = str(status.get("state") or "unknown")
    if state == "running" and training_pid(run_dir) is None:
        return "interrupted"
    return state
