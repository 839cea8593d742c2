"""`nslm sweep`: a tiny grid runs, is killed with SIGKILL and resumes without rerunning a trial (the cut
one continues from its checkpoint), reports tables and plots that hold the runs' own numbers; two workers
on one SQLite study split the trials; a TPE search stops at its trial count and a rerun adds none."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

import nslm
from nslm.cli import main
from nslm.sweep.report import pareto_front
from nslm.sweep.runner import DEFAULT_STUDY, create_sweep, load_study
from nslm.sweep.spec import read_spec
from nslm.train.metrics import read_metrics

from conftest import TINY_MODEL

pytestmark = pytest.mark.timeout(420)

SRC = Path(nslm.__file__).resolve().parents[1]


def write_spec(path: Path, data: Path, varied: str, *, steps: int = 20, seeds=(1,), extra: str = "") -> Path:
    """A spec of the tiny recipe (conftest's TINY_MODEL) with `varied` as its [grid] or [search] table."""
    fixed = "\n".join(f'"{k}" = {json.dumps(json.loads(v) if v[0].isdigit() else v)}'
                      for k, v in (s.split("=") for s in TINY_MODEL))
    path.write_text(f"""preset = "transformer-1m"
data = "{data}"
seeds = {json.dumps(list(seeds))}
{extra}
[budget]
steps = {steps}
[fixed]
{fixed}
"train.batch_size" = 8
"train.eval_interval" = 10
"train.eval_tokens" = 2048
"train.log_interval" = 5
"train.warmup_steps" = 2
"train.sample_tokens" = 0
"train.device" = "cpu"
"train.dtype" = "fp32"
"train.threads" = 1
{varied}
""", encoding="utf-8")
    return path


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))


def _study(out: Path) -> optuna.Study:
    return load_study(f"sqlite:///{out / 'study.sqlite'}", DEFAULT_STUDY)


def _kept(run_dir: Path) -> dict:
    evals = [r for r in read_metrics(run_dir) if r.get("event") == "eval"]
    return [r for r in evals if r["best"]][-1]


def _wait(test, timeout: float, what: str, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = test()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the sweep ended (code {proc.returncode}) before {what}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def test_a_killed_sweep_resumes_without_rerunning_and_reports(data_dir, tmp_path):
    spec = write_spec(tmp_path / "pos.toml", data_dir, '[grid]\n"model.pos_encoding" = ["learned", "sinusoidal", "rope"]\n'
                      '[measures]\nsteps = ["likelihood"]\nval_max_tokens = 3000', steps=40)
    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "nslm", "sweep", "run", str(spec), "--out", str(out)],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def cut_point():  # one trial finished and the next one checkpointed mid-way
            if not (out / "study.sqlite").is_file() or not (out / "sweep.json").is_file():
                return None
            trials = _study(out).get_trials(deepcopy=False)
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            running = [t for t in trials if t.state == TrialState.RUNNING and "folder" in t.user_attrs]
            if done and running and (Path(running[0].user_attrs["folder"]) / "seed-1" / "last" / "state.json").is_file():
                return done[0], running[0]
            return None

        done, cut = _wait(cut_point, 300, "a finished trial and a checkpointed one", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished_run = Path(done.user_attrs["folder"]) / "seed-1"
    before = {p.name: p.read_bytes() for p in (finished_run / "metrics.jsonl", finished_run / "model.safetensors")}

    assert main(["sweep", "run", str(spec), "--out", str(out)]) == 0

    trials = _study(out).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["model.pos_encoding"] for t in complete) == ["learned", "rope", "sinusoidal"]
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [cut.number]
    retry = next(t for t in complete if t.user_attrs.get("retry_of") == cut.number)
    assert retry.user_attrs["settings"] == cut.user_attrs["settings"]
    assert retry.user_attrs["runs"][0]["resumed_from_step"] >= 10  # continued from the checkpoint
    assert {p.name: p.read_bytes() for p in (finished_run / "metrics.jsonl", finished_run / "model.safetensors")} == before
    cut_run = Path(cut.user_attrs["folder"]) / "seed-1"
    steps = [r["step"] for r in read_metrics(cut_run) if r.get("event") == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 40  # no step logged twice, trained to the end
    assert sorted(p.name for p in (out / "trials").iterdir()) == sorted(Path(t.user_attrs["folder"]).name for t in complete)

    # the report: tables and plots, holding the numbers of the run folders themselves
    assert main(["sweep", "report", str(out)]) == 0
    report = out / "report"
    for name in ("report.md", "runs.csv", "trials.csv", "effects.csv", "pareto.csv", "results.json", "bpb_vs_params.png",
                 "bpb_vs_tokens.png", "bpb_vs_time.png", "pareto.png", "effect-model_pos_encoding.png"):
        assert (report / name).is_file() and (report / name).stat().st_size > 100, name
    rows = list(csv.DictReader((report / "trials.csv").open()))
    assert [float(r["select_bpb"]) for r in rows] == sorted(float(r["select_bpb"]) for r in rows)
    for row in rows:
        trial = next(t for t in complete if t.params["model.pos_encoding"] == row["model.pos_encoding"])
        kept = _kept(Path(trial.user_attrs["folder"]) / "seed-1")
        assert float(row["select_bpb"]) == pytest.approx(kept["dev_bpb"]) == pytest.approx(trial.value)
        assert float(row["val_bpb"]) == pytest.approx(kept["val_bpb"])
        assert int(row["tokens"].split(".")[0]) == 40 * 8 * 64
        summary = json.loads((Path(trial.user_attrs["folder"]) / "seed-1.eval" / "summary.json").read_text())
        assert float(row["eval.bits_per_byte"]) == pytest.approx(summary["summary"]["bits_per_byte"])
    effects = list(csv.DictReader((report / "effects.csv").open()))
    assert {r["value"] for r in effects} == {"learned", "sinusoidal", "rope"}
    pareto = list(csv.DictReader((report / "pareto.csv").open()))
    assert [r["trial"] for r in pareto] == [str(r["trial"]) for r in pareto_front(
        [{"trial": int(r["trial"]), "compute_flops": float(r["compute_flops"]), "select_bpb": float(r["select_bpb"])} for r in rows])]
    markdown = (report / "report.md").read_text()
    assert "selected by dev bits per byte" in markdown and "![" in markdown and "3 of 3 finished" in markdown


def test_two_workers_on_one_sqlite_study_split_the_trials(data_dir, tmp_path):
    # the base preset is varied too: a Transformer and a GRU of the tiny recipe
    spec_path = write_spec(tmp_path / "w.toml", data_dir, '[grid]\npreset = ["transformer-1m", "gru-1m"]\n'
                           '"train.lr" = [0.002, 0.004]', steps=10)
    out = tmp_path / "sweep"
    create_sweep(spec_path, read_spec(spec_path), out, None, None)
    workers = [subprocess.Popen([sys.executable, "-m", "nslm", "sweep", "worker", str(out)], env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    for proc in workers:
        _, err = proc.communicate(timeout=360)
        assert proc.returncode == 0, err.decode()[-2000:]
    trials = _study(out).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 4
    archs = {json.loads((Path(t.user_attrs["folder"]) / "seed-1" / "config.json").read_text())["model"]["arch"]
             for t in trials}
    assert archs == {"transformer", "gru"}
    assert {t.user_attrs["pid"] for t in trials} == {p.pid for p in workers}  # both took trials
    for t in trials:  # each run trained once: one evaluation at step 10, one start
        records = read_metrics(Path(t.user_attrs["folder"]) / "seed-1")
        assert [r["step"] for r in records if r.get("event") == "eval"] == [10]


def test_a_search_stops_at_its_trial_count_and_a_rerun_adds_none(data_dir, tmp_path):
    spec = write_spec(tmp_path / "lr.toml", data_dir, '[search]\n"train.lr" = {low = 0.001, high = 0.01, log = true}',
                      steps=10, extra="trials = 2\nsampler_seed = 3")
    out = tmp_path / "sweep"
    assert main(["sweep", "run", str(spec), "--out", str(out)]) == 0
    trials = _study(out).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert all(0.001 <= t.params["train.lr"] <= 0.01 for t in trials)
    for t in trials:
        config = json.loads((Path(t.user_attrs["folder"]) / "seed-1" / "config.json").read_text())
        assert config["train"]["lr"] == t.params["train.lr"] and config["train"]["max_steps"] == 10
    assert main(["sweep", "run", str(spec), "--out", str(out)]) == 0
    assert len(_study(out).get_trials()) == 2


def test_the_gui_sweeps_tab_shows_progress_and_the_report(data_dir, tmp_path):
    import gradio as gr  # only this test builds components

    from nslm.gui.context import Context
    from nslm.gui import sweeps_tab

    spec = write_spec(tmp_path / "one.toml", data_dir, '[grid]\n"model.norm" = ["layernorm", "rmsnorm"]', steps=10)
    out = tmp_path / "sweeps" / "norms"
    assert main(["sweep", "run", str(spec), "--out", str(out), "--max-trials", "1"]) == 0
    ctx = Context(runs_dir=tmp_path, data_dir=None, db_path=None, reports_dir=None, launcher=None, cache=None,
                  neighbours=None, sweeps_dir=tmp_path / "sweeps")
    assert sweeps_tab.list_sweeps(ctx.sweeps_dir) == ["norms"]
    with gr.Blocks():
        tab = sweeps_tab.build(ctx)
    shown = sweeps_tab.show(ctx, tab, "norms")
    best = _study(out).best_trial
    assert "1 of 2 trials done, 0 running, 0 failed" in shown[tab.progress]
    assert f"{best.value:.4f}" in shown[tab.progress] and "No report yet" in shown[tab.report]
    written = sweeps_tab.show(ctx, tab, "norms", write=True)
    rows, headers = written[tab.trials]["value"], written[tab.trials]["headers"]
    # the page shows the CSV's columns with spaces and its figures rounded to four decimals
    assert len(rows) == 1 and float(rows[0][headers.index("select bpb")]) == pytest.approx(best.value, abs=5e-5)
    assert {Path(p).name for p in written[tab.plots]} >= {"pareto.png", "bpb_vs_tokens.png", "effect-model_norm.png"}
    with pytest.raises(Exception, match="no longer exists"):
        sweeps_tab.show(ctx, tab, "../elsewhere")


def test_a_bundle_varies_settings_together_and_reports_under_its_name(data_dir, tmp_path):
    shapes = ('[grid]\nshape = [{name = "deep", "model.n_layer" = 2, "model.d_model" = 32},\n'
              '         {name = "wide", "model.n_layer" = 1, "model.d_model" = 48}]\n')
    spec_path = write_spec(tmp_path / "shape.toml", data_dir, shapes, steps=6)
    text = "\n".join(line for line in spec_path.read_text().splitlines()
                     if not line.startswith(('"model.n_layer"', '"model.d_model"')))
    spec_path.write_text(text + "\n")  # the bundle, not [fixed], sets the shape
    spec = read_spec(spec_path)
    assert spec.grid == {"shape": ["deep", "wide"]} and spec.varied == ["shape"]
    out = tmp_path / "sweep"
    assert main(["sweep", "run", str(spec_path), "--out", str(out)]) == 0
    trials = {t.params["shape"]: t for t in _study(out).get_trials()}
    assert set(trials) == {"deep", "wide"}
    for name, (layers, width) in {"deep": (2, 32), "wide": (1, 48)}.items():
        model = json.loads((Path(trials[name].user_attrs["folder"]) / "seed-1" / "config.json").read_text())["model"]
        assert (model["n_layer"], model["d_model"]) == (layers, width)
    # a rerun of the same spec joins its study (the stored spec reads back equal) and adds nothing
    assert main(["sweep", "run", str(spec_path), "--out", str(out)]) == 0
    assert len(_study(out).get_trials()) == 2
    assert main(["sweep", "report", str(out)]) == 0
    rows = list(csv.DictReader((out / "report" / "trials.csv").open()))
    assert sorted(r["shape"] for r in rows) == ["deep", "wide"]
    # results.json carries what a study needs without the run folders: the data's sizes and both curves
    meta = json.loads((data_dir / "meta.json").read_text())
    for run in json.loads((out / "report" / "results.json").read_text())["runs"]:
        assert run["data_meta"]["train"] == {k: meta["train"][k] for k in ("tokens", "stories", "bytes")}
        assert run["data_meta"]["path"] == str(data_dir.resolve())
        assert [p["tokens"] for p in run["train_curve"]] == [r["tokens"] for r in read_metrics(run["folder"])
                                                            if r.get("event") == "train"]
        assert all(p["dev_loss"] is not None for p in run["curve"])


@pytest.mark.parametrize("grid, message", [
    ('shape = [{"model.n_layer" = 2}]', "must be a table with a name"),
    ('shape = [{name = "a", "model.n_layer" = 2}, {name = "a", "model.n_layer" = 3}]', "names 'a' twice"),
    ('shape = [{name = "a", "model.n_layer" = [2, 3]}]', "gives model.n_layer a list"),
    ('shape = [{name = "a"}]', "sets nothing"),
    ('shape = [{name = "a", "model.colour" = 2}]', "unknown setting 'model.colour'"),
    ('shape = [{name = "a", data = 3}]', "grid shape value 'a' data must be a data folder"),
    ('shape = [{name = "a", preset = ""}]', "grid shape value 'a' preset must be a preset name"),
    ('"model.n_layer" = [{name = "a", "model.d_model" = 2}]', "name a bundle of settings with a plain word"),
])
def test_a_bad_bundle_is_one_clear_error(data_dir, tmp_path, grid, message):
    from nslm.errors import NslmError

    spec = write_spec(tmp_path / "bad.toml", data_dir, f"[grid]\n{grid}\n")
    with pytest.raises(NslmError, match=message.replace("(", r"\(").replace("[", r"\[")):
        read_spec(spec)


def test_a_bundled_setting_may_not_also_be_fixed(data_dir, tmp_path):
    from nslm.errors import NslmError

    spec = write_spec(tmp_path / "both.toml", data_dir, '[grid]\nshape = [{name = "a", "train.batch_size" = 4}]\n')
    with pytest.raises(NslmError, match="train.batch_size is both fixed and varied"):
        read_spec(spec)


def test_sigterm_outside_training_ends_the_sweep_as_ctrl_c_does(monkeypatch, tmp_path):
    """Between runs (measures, reports) no trainer holds SIGTERM: the sweep's own handler stops it, and the
    handler before is back afterwards."""
    from nslm.sweep import runner

    calls = []

    def trial_that_gets_sigterm(study, spec, out):
        calls.append(out)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(2)  # the handler raises in here
        return "next"

    monkeypatch.setattr(runner, "run_trial", trial_that_gets_sigterm)
    monkeypatch.setattr(runner, "recover_orphans", lambda study: [])
    monkeypatch.setattr(runner, "sweep_trials", lambda study: [])
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        runner.work(None, None, tmp_path, max_trials=5, log=lambda line: None)
    assert len(calls) == 1 and signal.getsignal(signal.SIGTERM) == before


def test_a_run_that_saw_a_stop_during_its_last_evaluation_stops_the_sweep(monkeypatch, tmp_path):
    from nslm.sweep import runner

    monkeypatch.setattr(runner, "prepare_run", lambda **kw: ({}, tmp_path))
    monkeypatch.setattr(runner, "train_run", lambda config, folder, resume=False:
                        {"state": "finished", "step": 7, "signal": "SIGTERM"})
    spec = SimpleNamespace(data_for=lambda s: "data", preset_for=lambda s: "transformer-1m", overrides=lambda s: {},
                           train_options=lambda: {})
    with pytest.raises(runner.SweepStopped, match="stopped at step 7"):
        runner.run_seed(spec, {}, 1, tmp_path / "seed-1")


@pytest.mark.parametrize("measures, message", [
    ('val_max_tokens = "lots"', "measures val_max_tokens must be a whole number of 1 or more, not 'lots'"),
    ("val_max_tokens = -5", "not -5"), ("cola_limit = 0", "cola_limit must be a whole number of 1 or more"),
    ("judge_timeout = -1.0", "judge_timeout must be a number above 0"), ("judge_retries = -1", "from 0 to 10"),
    ('judge_model = ""', "a non-empty string"), ("blimp = 3", "blimp must be a non-empty string"),
])
def test_a_bad_measures_value_is_refused_when_the_spec_is_read(data_dir, tmp_path, measures, message):
    from nslm.errors import NslmError

    spec = write_spec(tmp_path / "bad.toml", data_dir, '[grid]\n"train.lr" = [0.001]\n',
                      extra=f'[measures]\nsteps = ["likelihood"]\n{measures}\n')
    with pytest.raises(NslmError, match=message.replace("(", r"\(").replace("[", r"\[")):
        read_spec(spec)


def test_a_moved_sweep_folder_opens_its_own_study(data_dir, tmp_path):
    import shutil

    from nslm.sweep.runner import open_sweep, read_sweep

    spec_path = write_spec(tmp_path / "s.toml", data_dir, '[grid]\n"train.lr" = [0.001, 0.002]\n')
    create_sweep(spec_path, read_spec(spec_path), tmp_path / "here", None, None)
    moved = shutil.move(tmp_path / "here", tmp_path / "elsewhere")
    assert str(moved.resolve()) in read_sweep(moved)["storage"]
    study, spec = open_sweep(moved)
    assert len(study.get_trials()) == 2 and spec.varied == ["train.lr"]


@pytest.fixture(scope="module")
def finished_sweep(data_dir, tmp_path_factory) -> Path:
    """A finished grid of two trials of a few steps each, to copy and damage."""
    root = tmp_path_factory.mktemp("finished-sweep")
    spec = write_spec(root / "s.toml", data_dir, '[grid]\n"train.lr" = [0.001, 0.002]\n', steps=4)
    assert main(["sweep", "run", str(spec), "--out", str(root / "sweep")]) == 0
    return root / "sweep"


def own_copy(sweep: Path, to: Path) -> Path:
    """A copy of a sweep folder that keeps its study in its own study.sqlite (not the original's), no report."""
    import shutil

    copy = Path(shutil.copytree(sweep, to))
    shutil.rmtree(copy / "report", ignore_errors=True)
    record = json.loads((copy / "sweep.json").read_text())
    (copy / "sweep.json").write_text(json.dumps({**record, "storage": f"sqlite:///{copy / 'study.sqlite'}"}))
    return copy


@pytest.mark.parametrize("damage, message", [
    ("UPDATE trial_user_attributes SET value_json = '{broken' WHERE key = 'runs'", "is damaged and cannot be read (JSONDecodeError"),
    ("UPDATE trial_params SET param_value = 'nan'", "is damaged and cannot be read (ValueError"),
    ("UPDATE trial_params SET distribution_json = '{bad'", "is damaged and cannot be read (JSONDecodeError"),
    ("UPDATE trial_values SET value = NULL", "is damaged and cannot be read (AssertionError)"),
    ("UPDATE study_user_attributes SET value_json = '{x' WHERE key = 'spec'", "study.sqlite is damaged and cannot be read"),
    ("UPDATE study_user_attributes SET value_json = '[1]' WHERE key = 'spec'", "its recorded spec is not a table"),
    ("DELETE FROM trial_user_attributes WHERE key = 'runs'", "trial 0 records no runs"),
    ("UPDATE trial_user_attributes SET value_json = '[1, 2]' WHERE key = 'runs'", "trial 0 records no runs"),
    ("UPDATE trial_user_attributes SET value_json = json_set(value_json, '$[0].select_bpb', 'low') WHERE key = 'runs'",
     "trial 0 records a run whose select_bpb is 'low'"),
    ("UPDATE trial_user_attributes SET value_json = json_remove(value_json, '$[0].params') WHERE key = 'runs'",
     "trial 0 records a run whose params is None"),
    ("UPDATE trial_user_attributes SET value_json = '\"x\"' WHERE key = 'seconds'", "trial 0 records 'x' seconds"),
])
def test_a_damaged_study_database_is_one_line_naming_it(finished_sweep, tmp_path, capsys, damage, message):
    """`sweep report`, `sweep worker` and the GUI's progress read the study: a damaged one is one sentence each,
    exit 2, and nothing is written."""
    import sqlite3

    from nslm.errors import NslmError
    from nslm.gui.sweeps_tab import progress_markdown

    sweep = own_copy(finished_sweep, tmp_path / "sweep")
    with contextlib.closing(sqlite3.connect(sweep / "study.sqlite")) as db, db:
        assert db.execute(damage).rowcount > 0
    for argv in (["sweep", "report", str(sweep)], ["sweep", "worker", str(sweep)]):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
    assert not (sweep / "report").exists()
    with pytest.raises(NslmError, match=re.escape(message)):
        progress_markdown(sweep)


def test_a_study_file_that_is_not_a_database_is_one_line(finished_sweep, tmp_path, capsys):
    sweep = own_copy(finished_sweep, tmp_path / "sweep")
    (sweep / "study.sqlite").write_bytes(bytes(range(256)) * 20)
    assert main(["sweep", "report", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert "cannot open the study storage" in err and "not a database" in err and err.count("\n") == 1, err
