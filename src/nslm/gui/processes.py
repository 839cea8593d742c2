"""Long work as its own `nslm ...` process: started detached, recorded in a folder, read back by any page.

Training, evaluation and building the novelty index all run this way, so closing the page or restarting
the app leaves them running and every tab sees the same state. For each job NAME the folder holds
`NAME.json` (pid, command, start time and what the caller adds) and `NAME.log` (the process's output).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from nslm.atomic import atomic_write_json, read_json
from nslm.train.runlock import process_start, same_process


class DetachedJobs:
    """`nslm` commands started by this app, by name, with their records and output in `meta_dir`."""

    def __init__(self, meta_dir: Path, python: str = sys.executable):
        self.meta_dir = Path(meta_dir)
        self.python = python
        self._children: dict[int, subprocess.Popen] = {}

    def record(self, name: str) -> dict | None:
        return read_json(self.meta_dir / f"{name}.json")

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.meta_dir.glob("*.json")) if self.meta_dir.is_dir() else []

    def alive(self, pid, pid_start=None) -> bool:
        """Whether the job's process lives (with its start time: not a later process that got its pid)."""
        child = self._children.get(pid)
        if child is not None:
            return child.poll() is None  # reaps our own finished children so they do not linger as zombies
        return same_process(pid, pid_start)

    def spawn(self, name: str, args: list[str], nice: int = 0, **record) -> int:
        """Run `python -m nslm <args>` in its own session, output to NAME.log; returns its pid. `nice` > 0
        lowers its priority (background work that should not slow what the app's users do)."""
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        command = [self.python, "-m", "nslm", *args]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.meta_dir / f"{name}.log", "ab") as log:
            child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env=env)
        if nice > 0:
            # the child's main thread, before it has started any other (Python takes longer to start than this)
            try:
                os.setpriority(os.PRIO_PROCESS, child.pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + nice))
            except (OSError, AttributeError):  # not permitted, or no priorities on this system: run at ours
                pass
        self._children[child.pid] = child
        atomic_write_json(self.meta_dir / f"{name}.json",
                          {**record, "pid": child.pid, "pid_start": process_start(child.pid), "command": command,
                           "started": time.time()})
        return child.pid

    def forget(self, name: str) -> None:
        """Remove a finished job's record and output, so its name can be used again."""
        for suffix in (".json", ".log"):
            (self.meta_dir / f"{name}{suffix}").unlink(missing_ok=True)

    def log_text(self, name: str, last_bytes: int = 65536) -> str:
        """The end of NAME.log, progress-bar redraws collapsed to what each line showed last."""
        try:
            with open(self.meta_dir / f"{name}.log", "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - last_bytes))  # a long job's log grows; its end is enough
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))

    def log_tail(self, name: str, lines: int = 15) -> str:
        """The last non-empty lines of the job's output."""
        return "\n".join([line for line in self.log_text(name).splitlines() if line.strip()][-lines:])
