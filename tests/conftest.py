"""Shared fixtures: small real TinyStories files (or a synthetic stand-in), prepared data folders, tiny
trained runs, the web app on a free port, and a waiting helper.

- `story_files` -> (train files, valid file): the first ~1,500 stories of the std train files plus
  the 220 std validation stories, or synthetic stories when ../shared/data is absent.
- `data_dir` -> a data folder made by `nslm.data.prepare` from `story_files` (BPE, vocabulary 1024).
- `make_data_dir(kind="bpe", vocab_size=1024)` -> the same for other tokenizer kinds (cached).
- `small_data_dir` -> a data folder of 40 stories, for a whole novelty index in seconds.
- `eval_sets` -> {"blimp": folder, "cola": folder, "hellaswag": file}: the public evaluation sets of
  ../shared/data, or small stand-ins in their published formats where a set is absent.
- `tiny_run(preset="transformer-1m", steps=20, *settings)` -> a finished run folder of the one tiny recipe
  (`TINY_SETTINGS`, plus `settings`), trained once per session per recipe. Copy it before changing it.
- `tiny_args(*settings)` -> the same recipe as `nslm train` arguments, for tests of the command itself.
- `with serve_gui(folder) as gui:` the web app on a free 127.0.0.1 port with a copy of the tiny run.
- `wait_until(fetch, timeout=90, every=0.3, test=bool)` -> fetch's value once `test` holds it; `free_port()`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from nslm.data import prepare
from nslm.errors import NslmError
from nslm.eval.datasets import default_data_path
from nslm.sample_data import std_files, synthetic_stories
from nslm.tokenizer import EOT
from nslm.train.run import prepare_run, train_run

# Two threads for every test: the machines that run the suite have two cores, and more threads than
# cores make the tiny matrix products slower, not faster.
torch.set_num_threads(2)

# The smallest models that still learn something, so every screen and report can be tested in seconds.
# `model.rnn_hidden` applies to the LSTM/GRU presets only.
TINY_MODEL = ("model.d_model=32", "model.n_layer=1", "model.n_head=2", "model.d_ff=64", "model.context_length=64",
              "model.rnn_hidden=48")
TINY_TRAIN = ("train.batch_size=8", "train.eval_interval=10", "train.eval_tokens=2048", "train.log_interval=2",
              "train.warmup_steps=2", "train.sample_tokens=16")
TINY_SETTINGS = TINY_MODEL + TINY_TRAIN

TRAIN_STORIES = 1500


def _write_stories(path: Path, stories: list[str]) -> Path:
    path.write_text("".join(f"{s}\n{EOT}\n" for s in stories), encoding="utf-8")
    return path


def _first_stories(path: Path, n: int) -> list[str]:
    stories: list[str] = []
    with open(path, encoding="utf-8") as f:
        buf: list[str] = []
        for line in f:
            if line.strip() == EOT:
                stories.append("".join(buf).strip())
                buf = []
                if len(stories) == n:
                    break
            else:
                buf.append(line)
    return [s for s in stories if s]


@pytest.fixture(scope="session")
def story_files(tmp_path_factory) -> tuple[list[Path], Path]:
    """(train files, valid file) of real TinyStories text, small enough for fast tests."""
    folder = tmp_path_factory.mktemp("stories")
    std = std_files()
    if std is None:
        # as many stories as the real sample gives; like it, they fill a 1024-token BPE and 2048 words
        train, valid = synthetic_stories(TRAIN_STORIES, seed=1), synthetic_stories(220, seed=2)
        return [_write_stories(folder / "train.txt", train)], _write_stories(folder / "valid.txt", valid)
    train_paths, valid_path = std
    train = _first_stories(train_paths[0], TRAIN_STORIES)
    return [_write_stories(folder / "train.txt", train)], valid_path


@pytest.fixture(scope="session")
def make_data_dir(tmp_path_factory, story_files):
    """Factory: `make_data_dir(kind="bpe", vocab_size=1024) -> Path` of a prepared data folder (cached)."""
    made: dict[tuple[str, int | None], Path] = {}
    train, valid = story_files

    def make(kind: str = "bpe", vocab_size: int | None = 1024) -> Path:
        key = (kind, vocab_size)
        if key not in made:
            out = tmp_path_factory.mktemp("data") / f"{kind}-{vocab_size}"
            prepare([str(p) for p in train], [str(valid)], out, tokenizer_kind=kind, vocab_size=vocab_size)
            made[key] = out
        return made[key]

    return make


@pytest.fixture(scope="session")
def data_dir(make_data_dir) -> Path:
    """A data folder (train/valid.txt, tokenizer.json, *.bin, meta.json) with a 1024-token BPE."""
    return make_data_dir("bpe", 1024)


@pytest.fixture(scope="session")
def small_data_dir(tmp_path_factory, story_files) -> Path:
    """A data folder of the first 40 training stories, so that embedding all of them (a whole novelty index)
    takes seconds."""
    train, valid = story_files
    folder = tmp_path_factory.mktemp("small")
    stories = train[0].read_text(encoding="utf-8").split(f"{EOT}\n")[:40]
    _write_stories(folder / "train.txt", [s.strip() for s in stories if s.strip()])
    prepare([str(folder / "train.txt")], [str(valid)], folder / "data", tokenizer_kind="bpe", vocab_size=1024)
    return folder / "data"


def _blimp_stand_in(folder: Path) -> Path:
    """Three paradigms of minimal pairs in BLiMP's jsonl format."""
    subjects = [("The cat", "cats"), ("The dog", "dogs"), ("The little bird", "birds"), ("The old bear", "bears")]
    paradigms = {
        ("regular_plural_subject_verb_agreement", "s-v_agreement", "morphology"):
            [(f"{s} sleeps in the sun.", f"{s} sleep in the sun.") for s, _ in subjects],
        ("determiner_noun_agreement", "determiner_noun_agreement", "morphology"):
            [(f"Tom saw these {p}.", f"Tom saw this {p}.") for _, p in subjects],
        ("anaphor_gender_agreement", "anaphor_agreement", "morphology"):
            [(f"{name} hid {self} behind the tree.", f"{name} hid {other} behind the tree.")
             for name, self, other in (("Lily", "herself", "himself"), ("Tom", "himself", "herself"),
                                       ("Mia", "herself", "himself"), ("Ben", "himself", "herself"))],
    }
    folder.mkdir()
    for (uid, term, field), pairs in paradigms.items():
        rows = [{"sentence_good": good, "sentence_bad": bad, "field": field, "linguistics_term": term, "UID": uid,
                 "pairID": str(i)} for i, (good, bad) in enumerate(pairs)]
        (folder / f"{uid}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def _cola_stand_in(folder: Path) -> Path:
    """CoLA's three raw .tsv files (source, label, mark, sentence), from two sources, half of them acceptable."""
    pairs = [(f"{name} found the {thing}.", f"{name} the found {thing}.")
             for name in ("Lily", "Tom", "Mia", "Ben", "Sue") for thing in ("ball", "kite", "cake", "book", "hat", "boat")]
    folder.mkdir()
    for name, count in (("in_domain_train", 80), ("in_domain_dev", 20), ("out_of_domain_dev", 20)):
        lines = []
        for i in range(count):
            good, bad = pairs[i // 2 % len(pairs)]
            acceptable = i % 2 == 0
            source = ("gj04", "bc01")[i % 4 // 2]
            lines.append(f"{source}\t{int(acceptable)}\t{'' if acceptable else '*'}\t{good if acceptable else bad}\n")
        (folder / f"{name}.tsv").write_text("".join(lines), encoding="utf-8")
    return folder


def _hellaswag_stand_in(path: Path) -> Path:
    """Items in llama.cpp's HellaSwag jsonl format, from both of its sources (ActivityNet, then WikiHow)."""
    rows = [{"val_index": i if i < 6 else 3243 + i, "activity_label": "Playing fetch",
             "ctx": f"{name} stands in the park with a ball. Her dog runs to her and {name}",
             "endings": ["throws the ball to the dog.", "eats the ball for lunch.", "is a ball.", "sings to the moon."],
             "label": 0} for i, name in enumerate(["Lily", "Mia", "Sue", "Anna", "Lucy", "Zoe"] * 2)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def eval_sets(tmp_path_factory) -> dict[str, Path]:
    """{"blimp": folder, "cola": folder, "hellaswag": file}: each public evaluation set where the machine has it,
    else a stand-in of a few items in the set's published format, so that every step runs end to end."""
    folder = tmp_path_factory.mktemp("eval-sets")
    return {"blimp": default_data_path("blimp") or _blimp_stand_in(folder / "blimp"),
            "cola": default_data_path("cola") or _cola_stand_in(folder / "cola"),
            "hellaswag": default_data_path("hellaswag") or _hellaswag_stand_in(folder / "hellaswag.jsonl")}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, data_dir):
    """Factory: `tiny_run(preset="transformer-1m", steps=20, *settings) -> Path` of a finished run folder
    named after the preset, trained with the real training code on `data_dir` once per session for each
    recipe. Tests share it: copy it before changing anything in it."""
    made: dict[tuple, Path] = {}

    def make(preset: str = "transformer-1m", steps: int = 20, *settings: str) -> Path:
        key = (preset, steps, settings)
        if key not in made:
            out = tmp_path_factory.mktemp("tiny-runs") / preset
            config, run_dir = prepare_run(out=out, data=data_dir, preset=preset, overrides=[*TINY_SETTINGS, *settings],
                                          train_options={"max_steps": steps, "device": "cpu", "dtype": "fp32"})
            train_run(config, run_dir)
            made[key] = run_dir
        return made[key]

    return make


@pytest.fixture(scope="session")
def tiny_args():
    """`tiny_args(*settings)`: the tiny recipe (then `settings`) as `nslm train` arguments, on the CPU in fp32."""

    def args(*settings: str) -> list[str]:
        return [a for item in (*TINY_SETTINGS, *settings) for a in ("--set", item)] + ["--dtype", "fp32", "--device", "cpu"]

    return args


@pytest.fixture(scope="session")
def tiny_extra() -> str:
    """The Train form's "extra settings" box for a tiny run started from the page (width, layers, context,
    batch and budget come from the form's own fields)."""
    return "\n".join(["model.n_head=2", "model.d_ff=64", *TINY_TRAIN[1:]])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def free_port():
    """`free_port()`: a TCP port on 127.0.0.1 that nothing listens on now."""
    return _free_port


@pytest.fixture(scope="session")
def serve_gui(tiny_run, data_dir):
    """Factory: `with serve_gui(folder[, data]) as gui:` runs the web app on a free port with its own runs (a
    copy of the tiny transformer run, as `tiny`), reports and ratings under `folder`, on the session's data
    folder unless `data` names another; leaving the block stops
    the trainings the app started and closes it."""
    from nslm.gui.app import build_app, launch  # gradio: only for the GUI tests

    @contextlib.contextmanager
    def serve(tmp: Path, data: Path | None = None):
        data = data or data_dir
        runs = tmp / "runs"
        runs.mkdir()
        shutil.copytree(tiny_run("transformer-1m"), runs / "tiny")
        # its own (empty) sweeps folder, not the one in the working directory
        app = build_app(runs_dir=runs, data_dir=data, db_path=tmp / "ratings.sqlite", reports_dir=tmp / "reports",
                        sweeps_dir=tmp / "sweeps")
        gui = SimpleNamespace(app=app, url=launch(app, port=_free_port()), runs=runs, reports=tmp / "reports",
                              db=tmp / "ratings.sqlite", data=data)
        try:
            yield gui
        finally:
            _stop_training(gui)
            app.close()

    return serve


def _stop_training(gui) -> None:
    launcher = gui.app.nslm_context.launcher
    for name in [p.name for p in gui.runs.iterdir()]:
        if launcher.state(name) in ("starting", "running"):
            try:
                launcher.stop(name)
            except NslmError:  # it ended meanwhile
                pass
    deadline = time.time() + 60
    while launcher.active_run() and time.time() < deadline:
        time.sleep(0.3)


@pytest.fixture(scope="session")
def wait_until():
    """`wait_until(fetch, timeout=90, every=0.3, test=bool)`: call `fetch` until `test(value)` holds and
    return the value; the test fails with the last value on timeout."""

    def wait(fetch, timeout: float = 90.0, every: float = 0.3, test=bool):
        deadline = time.time() + timeout
        value = fetch()
        while not test(value):
            if time.time() > deadline:
                pytest.fail(f"timed out waiting; last value: {value!r}"[:2000])
            time.sleep(every)
            value = fetch()
        return value

    return wait
