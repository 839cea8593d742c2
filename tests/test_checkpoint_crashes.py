"""Crash points of a checkpoint: a kill -9 at any step of replacing `last/` leaves a run that resumes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nslm.atomic import atomic_dir, complete_dir, remove_stray_temporaries, writing_in
from nslm.cli import main
from nslm.train import checkpoint
from test_train import TINY, metrics

# Saves checkpoint 1, then checkpoint 2 in forked children that kill themselves with SIGKILL just before
# their k-th file-system step (make a folder, write a file, rename, remove), k = 1, 2, ... until a save
# gets through. It runs in a fresh process: forking pytest, whose torch threads may hold locks, can hang.
KILLER = r"""
import json, os, shutil, signal, sys, tempfile
from pathlib import Path
import torch
torch.set_num_threads(1)
import safetensors.torch
from nslm.models import ModelConfig, build_model
from nslm.train import checkpoint

def model_and_optimizer(seed):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(vocab_size=64, context_length=16, d_model=16, n_layer=1, n_head=2, d_ff=32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))[1].backward()
    optimizer.step()
    return model, optimizer

def save(run, step):
    model, optimizer = model_and_optimizer(step)
    state = {"step": step, "tokens": 64 * step, "elapsed_s": 1.5 * step, "best_val_loss": None,
             "data_position": {"seed": 1, "next_step": step, "world_size": 1}}
    checkpoint.save_last(run, model, optimizer, state, {"cpu_rank0": torch.get_rng_state()})

def die_at(fault):
    count = [0]
    def dying(fn):
        def wrapped(*args, **kwargs):
            count[0] += 1
            if count[0] == fault:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)
        return wrapped
    os.replace = dying(os.replace)
    shutil.rmtree = dying(shutil.rmtree)
    tempfile.mkdtemp = dying(tempfile.mkdtemp)
    checkpoint.save_file = dying(safetensors.torch.save_file)
    Path.write_text = dying(Path.write_text)

if __name__ == "__main__" and len(sys.argv) > 1:
    killed = []
    for fault in range(1, 40):
        run = Path(sys.argv[1]) / f"run{fault}"
        run.mkdir()
        save(run, 1)
        pid = os.fork()
        if pid == 0:
            die_at(fault)
            save(run, 2)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            break  # the save got through every step
        killed.append(str(run))
    print(json.dumps(killed))
"""
HELPERS: dict = {}
exec(KILLER, HELPERS)  # the same model and checkpoint for reading back as the killed children wrote


def resumed_step(run: Path) -> int:
    """The step of the checkpoint that resuming `run` would use, checking its weights are that step's."""
    model, optimizer = HELPERS["model_and_optimizer"](99)
    step = checkpoint.load_last(run, model, optimizer)[0]["step"]
    expected, _ = HELPERS["model_and_optimizer"](step)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), expected.state_dict().values()))
    return step


def test_a_kill_at_every_step_of_replacing_last_leaves_a_complete_checkpoint(tmp_path):
    out = subprocess.run([sys.executable, "-c", KILLER, str(tmp_path)], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.returncode == 0, out.stderr
    outcomes = []
    for run in map(Path, json.loads(out.stdout)):
        seen = resumed_step(run)  # what a reader finds, before anything is repaired
        checkpoint.tidy_run_folder(run)
        assert sorted(p.name for p in run.iterdir()) == ["last"], run  # strays and leftovers are gone
        assert resumed_step(run) == seen, run
        outcomes.append(seen)
    assert len(outcomes) >= 8  # making the folder, 3 files, renames and removals were each interrupted
    # killed before the new folder was complete the old checkpoint stays; after, the new one is used
    assert outcomes == sorted(outcomes) and set(outcomes) == {1, 2}


def test_stray_temporaries_go_but_never_those_of_a_live_writer(tmp_path):
    (tmp_path / ".last.abc123.tmp").mkdir()
    (tmp_path / ".model.safetensors.x1.tmp").write_bytes(b"half")
    (tmp_path / "model.safetensors").write_bytes(b"kept")
    with writing_in(tmp_path):  # another writer is busy in this folder: nothing may be removed
        remove_stray_temporaries(tmp_path)
        assert len(list(tmp_path.iterdir())) == 3
    remove_stray_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_a_folder_replaced_after_a_crash_is_completed_by_the_next_write(tmp_path):
    out = tmp_path / "data"
    with atomic_dir(out) as tmp:
        (tmp / "meta.json").write_text("1")
    # a crash between the two renames: the old folder moved away, the complete new one not yet in place
    os.replace(out, tmp_path / ".data.old")
    shutil.copytree(tmp_path / ".data.old", tmp_path / ".data.new")
    (tmp_path / ".data.new" / "meta.json").write_text("2")
    (tmp_path / ".data.x7.tmp").mkdir()
    assert (complete_dir(out) / "meta.json").read_text() == "2"
    with atomic_dir(out, replace=True) as tmp:
        (tmp / "meta.json").write_text("3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert (out / "meta.json").read_text() == "3"


def test_resume_after_a_kill_between_the_renames_continues_from_the_new_checkpoint(tmp_path, data_dir, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(data_dir), "--out", str(run), "--max-steps", "4",
                 "--set", "train.stop_after_steps=2", *TINY]) == 0
    # what a kill -9 between `last -> .last.old` and `.last.new -> last` leaves behind
    shutil.copytree(run / "last", run / ".last.new")
    os.replace(run / "last", run / ".last.old")
    (run / ".status.json.k2.tmp").write_text("{")
    assert main(["train", "--resume", str(run)]) == 0
    assert [m["step"] for m in metrics(run) if m["event"] == "train"] == [1, 2, 3, 4]
    assert json.loads((run / "last" / "state.json").read_text())["step"] == 4
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".") and p.name != ".train.lock") == []


@pytest.mark.parametrize("damage, words", [
    (lambda s: [], "not a JSON object"),
    (lambda s: dict(s, step="abc"), '"step" must be a whole number >= 0, not \'abc\''),
    (lambda s: dict(s, step=-40), '"step" must be a whole number >= 0, not -40'),
    (lambda s: dict(s, tokens=1.5), '"tokens" must be a whole number'),
    (lambda s: dict(s, elapsed_s=float("nan")), '"elapsed_s" must be a number'),
    (lambda s: dict(s, data_position=[]), '"data_position" must be an object'),
    (lambda s: dict(s, optimizer=None), '"optimizer" must be an object'),
    (lambda s: {k: v for k, v in s.items() if k != "tokens"}, '"tokens" must be'),
    (lambda s: "[" * 100_000, "not JSON"),
])
def test_a_damaged_state_json_is_refused_naming_the_field(tmp_path, data_dir, capsys, damage, words):
    run = tmp_path / "run"
    assert main(["train", "--data", str(data_dir), "--out", str(run), "--max-steps", "4",
                 "--set", "train.stop_after_steps=1", *TINY]) == 0
    path = run / "last" / "state.json"
    damaged = damage(json.loads(path.read_text()))
    path.write_text(damaged if isinstance(damaged, str) else json.dumps(damaged))
    # the lock file is rewritten by every attempt (it names the process); nothing else may change
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".train.lock"}
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and err.count("\n") == 1, err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".train.lock"} == before
