"""Which process trains a run: the run's lock, not a pid that may now belong to any other process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nslm.cli import main
from nslm.errors import NslmError
from nslm.gui import runs as runlib
from nslm.gui.training import TrainingLauncher
from nslm.train.runlock import process_start, run_state, same_process, training_pid
from test_train import TINY

HOLDER = """import sys, time
from nslm.train.runlock import hold_run
with hold_run(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def hold_run_in_a_process(run_dir: Path) -> subprocess.Popen:
    """A live process that holds `run_dir`'s training lock, as `nslm train` does while it trains."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert proc.stdout.readline().strip() == "held"
    return proc


def running_status(folder: Path, pid: int) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    status = {"state": "running", "pid": pid, "step": 3, "max_steps": 10, "updated": "2026-11-26T10:00:00+00:00"}
    (folder / "status.json").write_text(json.dumps(status))
    (folder / "config.json").write_text(json.dumps({"model": {"arch": "transformer"}}))
    return status


def test_a_running_status_whose_pid_is_now_another_process_does_not_block(tmp_path):
    runs = tmp_path / "runs"
    # the pid is alive (it is this test), but no process holds the run's lock: its trainer is gone
    status = running_status(runs / "stale", os.getpid())
    # and the app's own launch record names the same pid with another start time (a reused pid)
    (runs / ".nslm-gui").mkdir()
    (runs / ".nslm-gui" / "stale.json").write_text(json.dumps({"pid": os.getpid(), "pid_start": 1, "started": 0}))
    assert training_pid(runs / "stale") is None and run_state(runs / "stale", status) == "interrupted"
    launcher = TrainingLauncher(runs)
    assert launcher.state("stale") == "interrupted" and launcher.active_run() is None
    assert [e.state for e in runlib.list_models(runs) if e.name == "stale"] == ["interrupted"]
    with pytest.raises(NslmError, match=r"not training \(it is interrupted\)"):
        launcher.stop("stale")
    launcher._refuse_if_busy()  # a new run may start


def test_the_lock_holder_is_the_training_process_until_it_dies(tmp_path):
    run = tmp_path / "run"
    status = running_status(run, 1)  # pid 1 is alive, and is not the trainer
    holder = hold_run_in_a_process(run)
    assert training_pid(run) == holder.pid and run_state(run, status) == "running"
    holder.kill()  # kill -9: no chance to write status.json, yet the kernel drops the lock
    holder.wait()
    assert training_pid(run) is None and run_state(run, status) == "interrupted"


def test_a_process_is_named_by_its_pid_and_start_time():
    me = process_start(os.getpid())
    assert me is not None and same_process(os.getpid(), me) and same_process(os.getpid(), None)
    assert not same_process(os.getpid(), me + 1)  # the same pid with another start is another process
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not same_process(dead.pid, None)
    assert not any(same_process(pid, None) for pid in (0, -1, None, "x", 2**80))


def test_a_second_trainer_of_the_same_run_is_refused_in_one_line(tmp_path, data_dir, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(data_dir), "--out", str(run), "--max-steps", "4",
                 "--set", "train.stop_after_steps=1", *TINY]) == 0
    holder = hold_run_in_a_process(run)
    try:
        before = (run / "status.json").read_bytes()
        capsys.readouterr()
        assert main(["train", "--resume", str(run)]) == 2
        err = capsys.readouterr().err
        assert err == f"error: {run} is being trained by another process (pid {holder.pid}); stop it first or wait until it ends\n"
        assert (run / "status.json").read_bytes() == before  # the other process's status is left alone
    finally:
        holder.kill()
        holder.wait()
    assert main(["train", "--resume", str(run)]) == 0

