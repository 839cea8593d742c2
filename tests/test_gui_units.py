"""The GUI's pieces without a server: run listing, name checks, training state, form checks, marks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nslm.errors import NslmError
from nslm.gui import runs as runlib
from nslm.gui.overlap import mark_shared, shared_ngram_share
from nslm.gui.reports import latest_report
from nslm.gui.storytelling import check_prompt, check_sampling
from nslm.gui.train_form import EVALUATIONS, TrainForm, check_form, parse_extra
from nslm.gui.training import TrainingLauncher
from test_run_lock import hold_run_in_a_process


def write_run(folder, *, state="finished", pid=None, metrics=(), total=1_050_000, weights=True, replace=False):
    folder.mkdir(parents=True, exist_ok=replace)
    config = {"model": {"arch": "transformer", "n_layer": 4, "d_model": 128, "pos_encoding": "rope",
                        "vocab_size": 4096},
              "data": {"tokenizer_kind": "bpe", "vocab_size": 4096}, "params": {"total": total}}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "status.json").write_text(json.dumps({"state": state, "pid": pid or 0, "step": 10, "max_steps": 100,
                                                    "updated": "2026-11-26T10:00:00+00:00"}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    if weights:
        (folder / "model.safetensors").write_bytes(b"x")
    return folder


def test_names_that_could_leave_the_folder_are_refused(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    (tmp_path / "secret").mkdir()
    (runs / "link").symlink_to(tmp_path / "secret")
    for bad in ["..", "../secret", "a/b", "/etc", ".hidden", "", "x" * 200, "run\0"]:
        with pytest.raises(NslmError):
            runlib.child_folder(runs, bad)
    with pytest.raises(NslmError, match="outside"):
        runlib.child_folder(runs, "link")
    assert runlib.child_folder(runs, "tf-1m_v2.0") == (runs / "tf-1m_v2.0").resolve()
    with pytest.raises(NslmError):
        runlib.model_path("run:../secret", runs)
    with pytest.raises(NslmError):
        runlib.model_path("/etc/passwd", runs)
    with pytest.raises(NslmError, match="No model selected"):
        runlib.model_path("", runs)


def test_model_list_reads_run_folders_and_survives_foreign_ones(tmp_path):
    runs = tmp_path / "runs"
    metrics = [
        {"event": "train", "step": 10, "tokens": 5000, "train_loss": 5.0},
        {"event": "eval", "step": 10, "tokens": 5000, "val_loss": 4.0, "val_bpb": 1.900},
        {"event": "train", "step": 20, "tokens": 10000, "train_loss": 4.5},
        {"event": "eval", "step": 20, "tokens": 10000, "val_loss": 3.5, "val_bpb": 1.500},
    ]
    write_run(runs / "good", metrics=metrics)
    (runs / "good" / "metrics.jsonl").open("a").write('{"event": "train", "step": 2')  # being written
    (runs / "foreign").mkdir()
    (runs / "foreign" / "notes.txt").write_text("not a run")
    (runs / ".nslm-gui").mkdir()
    entries = {e.name: e for e in runlib.list_models(runs) if e.kind == "run"}  # shipped models come first
    assert set(entries) == {"good", "foreign"}
    good = entries["good"]
    assert good.row() == ["good", "run", "transformer 4L d128 rope", "1.05M", "bpe-4096", "10.00k", "1.500",
                          "2026-11-26 10:00", "finished"]
    assert good.loadable and good.key == "run:good"
    assert not entries["foreign"].loadable
    assert "not a run folder" in entries["foreign"].state


def test_a_running_status_whose_process_is_gone_reads_as_interrupted(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_run(tmp_path / "runs" / "crashed", state="running", pid=dead.pid)
    launcher = TrainingLauncher(tmp_path / "runs")
    assert launcher.state("crashed") == "interrupted"
    assert launcher.active_run() is None
    assert [e.state for e in runlib.list_models(tmp_path / "runs") if e.name == "crashed"] == ["interrupted"]
    assert launcher.state("nothing-here") == "missing"


def test_a_second_run_is_refused_while_one_trains(tmp_path, data_dir):
    runs = tmp_path / "runs"
    write_run(runs / "busy", state="running")
    holder = hold_run_in_a_process(runs / "busy")
    write_run(runs / "busy", state="running", pid=holder.pid, replace=True)
    launcher = TrainingLauncher(runs)
    assert launcher.active_run() == "busy"
    with pytest.raises(NslmError, match="'busy' is still training"):
        launcher.start("another", ["--preset", "transformer-1m", "--data", str(data_dir)])
    assert not (runs / "another").exists()
    with pytest.raises(NslmError, match="is running already"):
        launcher.resume("busy")
    assert "Stopping 'busy'" in launcher.stop("busy")  # the process holding the run's lock is signalled
    assert holder.wait(timeout=30) == -signal.SIGTERM


def test_a_process_that_dies_before_writing_status_is_failed_with_its_error(tmp_path):
    runs = tmp_path / "runs"
    launcher = TrainingLauncher(runs)

    def start_and_wait(preset):
        launcher.start("bad", ["--preset", preset, "--data", str(tmp_path)])
        deadline = time.time() + 60
        while launcher.state("bad") == "starting" and time.time() < deadline:
            time.sleep(0.2)

    start_and_wait("first-missing-preset")
    assert launcher.state("bad") == "failed"
    assert launcher.failure_reason("bad").startswith("error:") and "first-missing-preset" in launcher.failure_reason("bad")
    # it failed before making a run folder, so there is nothing to resume: the name is free again, and the
    # second start's output is not mixed with the first's
    start_and_wait("second-missing-preset")
    assert launcher.state("bad") == "failed"
    log = launcher.log_tail("bad", 50)
    assert "second-missing-preset" in log and "first-missing-preset" not in log
    # a name whose run folder exists stays taken
    (runs / "made").mkdir()
    with pytest.raises(NslmError, match="already exists"):
        launcher.start("made", ["--preset", "transformer-1m"])


def test_shared_ngrams_are_marked_and_html_is_escaped():
    story = "Once upon a time, there was a <script>cat</script>. The cat liked to play with a red ball."
    neighbour = "once upon a time there was a dog. The cat liked to play in the sun."
    html = mark_shared(neighbour, story, 4)
    assert html.startswith("<mark>once upon a time there was a</mark>")
    assert "<mark>The cat liked to play</mark> in the sun." in html
    assert "<script>" not in mark_shared(story, neighbour, 4)
    assert "&lt;script&gt;" in mark_shared(story, neighbour, 4)
    assert shared_ngram_share("a b c d e", "a b c d e") == 1.0
    assert shared_ngram_share("a b c d e", "e d c b a") == 0.0


def test_sampling_values_are_checked_with_a_reason():
    ok = check_sampling(0.8, 0, 1.0, 300, -1)
    assert (ok.temperature, ok.top_k, ok.top_p, ok.max_tokens, ok.seed) == (0.8, None, None, 300, None)
    assert check_sampling(0, 40, 0.9, 10, 7).kwargs() == {"max_tokens": 10, "temperature": 0.0, "top_k": 40,
                                                         "top_p": 0.9, "seed": 7}
    assert check_sampling(7, 0, 1, 10, 1).temperature == 7  # generation's own bound: any temperature >= 0
    # the bounds and sentences are generation's (nslm.generate.api.check_options), not a copy, with the page's
    # field names in place of the argument names; an empty field is called empty, and nothing is rounded
    for args, reason in [((-1, 0, 1, 10, 1), "^Temperature must be 0"), ((float("nan"), 0, 1, 10, 1), "^Temperature"),
                         ((None, 0, 1, 10, 1), "^Temperature is empty"),
                         ((1, -3, 1, 10, 1), "^Top-k"), ((1, 2.5, 1, 10, 1), "^Top-k .*2.5"), ((1, 0, 0, 10, 1), "^Top-p"),
                         ((1, 0, 1, 0, 1), "^Max tokens"), ((1, 0, 1, 10**9, 1), "^Max tokens"),
                         ((1, 0, 1, None, 1), "^Max tokens .*not empty"), ((1, 0, 1, 2.5, 1), "^Max tokens .*2.5"),
                         ((1, 0, 1, 10, 1.5), "^Seed .*1.5"), ((1, 0, 1, 10, "x"), "^Seed"), ((1, 0, 1, 10, 2**70), "^Seed")]:
        with pytest.raises(NslmError, match=reason):
            check_sampling(*args)
    with pytest.raises(NslmError, match="under 20,000"):
        check_prompt("x" * 20_001)


def test_train_form_shows_reasons_per_field_and_the_parameter_count(data_dir):
    from nslm.models import build_model, load_preset

    ok = check_form(TrainForm("transformer-1m", str(data_dir), 128, 4, 256, 2e-3, 32, "minutes", 5, "tf", ""))
    assert ok.ok, ok.errors
    cfg = load_preset("transformer-1m")
    cfg.vocab_size = 1024
    total = build_model(cfg).param_counts()["total"]
    assert f"{runlib.human_count(total)} parameters" in ok.params_text
    assert "bpe" in ok.data_text and "1024" in ok.data_text
    assert ok.args[:4] == ["--preset", "transformer-1m", "--data", str(data_dir)]
    assert "--max-minutes" in ok.args and "train.lr=0.002" in ok.args

    bad = check_form(TrainForm("transformer-1m", str(data_dir / "nope"), 130, 0, 256, -1, 2.5, "tokens", 0, "../x", "lr"))
    assert set(bad.errors) == {"data", "layers", "lr", "batch", "budget", "name", "extra"}
    assert "does not exist" in bad.errors["data"]
    assert "Layers must be between" in bad.errors["layers"]
    assert "below 1" in check_form(TrainForm("transformer-1m", str(data_dir), 128, 4, 256, 1, 8, "minutes", 1, "tf", "")).errors["lr"]
    assert "not a valid name" in bad.errors["name"]
    heads = check_form(TrainForm("transformer-1m", str(data_dir), 130, 4, 256, 1e-3, 8, "minutes", 1, "tf", ""))
    assert set(heads.errors) == {"width"} and "n_head" in heads.errors["width"]
    assert parse_extra("train.eval_interval=10, model.n_head=2\ntrain.log_interval=1") == (
        ["train.eval_interval=10", "model.n_head=2", "train.log_interval=1"], None)


def test_latest_report_is_the_newest_that_names_the_model(tmp_path):
    model = tmp_path / "runs" / "tf"
    model.mkdir(parents=True)
    reports = tmp_path / "reports"
    for name, models, age in [("old", ["runs/tf"], 100), ("new", ["runs/tf", "runs/lstm"], 10),
                              ("other", ["runs/lstm"], 0)]:
        folder = reports / name
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps({"models": {m: {} for m in models}}))
        (folder / "report.md").write_text(f"# {name}\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![loss](loss.png)\n")
        (folder / "loss.png").write_bytes(b"png")
        stamp = time.time() - age
        os.utime(folder / "results.json", (stamp, stamp))
    report = latest_report(model, reports)
    assert report.folder == reports / "new"
    assert "# new" in report.markdown and "![loss]" not in report.markdown
    assert report.images == [reports / "new" / "loss.png"]
    assert latest_report(tmp_path / "runs" / "gru", reports) is None


def test_closest_story_panel_shows_cosine_and_marks_shared_ngrams(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from nslm.eval import novelty
    from nslm.gui.storytelling import NeighbourFinder

    data = tmp_path / "data"
    (data / "novelty-index").mkdir(parents=True)
    meta = {"stories": 300, "ngram_stories": 1000}  # an index of the first 300 stories (--index-limit 300)
    (data / "novelty-index" / "meta.json").write_text(json.dumps(meta))
    asked = []

    class FakeIndex:
        def __init__(self):
            self.meta = meta

        def __len__(self):
            return meta["stories"]

        def nearest(self, text):
            asked.append(text)
            return "Once upon a time there was a <b>dog</b> who liked to run.", 0.912

    monkeypatch.setattr(novelty.NoveltyIndex, "load", classmethod(lambda cls, data_dir, folder=None: FakeIndex()))
    model = SimpleNamespace(config={"data": {"path": str(data)}})
    html = NeighbourFinder(None).html(model, "Once upon a time there was a cat who liked to run.")
    assert asked == ["Once upon a time there was a cat who liked to run."]
    assert "cosine similarity 0.912" in html
    assert "the first 300 of 1,000 training stories (a partial index)" in html
    assert "<mark>Once upon a time there was a</mark>" in html and "<mark>who liked to run</mark>" in html
    assert "&lt;b&gt;dog&lt;/b&gt;" in html and "<b>dog" not in html
    without = NeighbourFinder(None).html(SimpleNamespace(config={"data": {"path": str(tmp_path)}}), "story")
    assert "No novelty index" in without


def test_the_app_starts_with_a_shipped_model_ready_or_a_friendly_empty_state(monkeypatch, tmp_path, data_dir, tiny_run):

    from nslm.gui.app import build_app
    from nslm.gui.models_tab import empty_state

    shipped = tmp_path / "pretrained"
    shutil.copytree(tiny_run("transformer-1m"), shipped / "tiny-shipped")
    monkeypatch.setattr("nslm.generate.api.pretrained_root", lambda: shipped)  # the one place that says where
    ctx = build_app(runs_dir=tmp_path / "runs", data_dir=data_dir).nslm_context
    assert ctx.default_model() == "shipped:tiny-shipped"
    assert ctx.cache.loaded() == ["shipped:tiny-shipped"]  # loaded before the first page opens
    assert empty_state(ctx) == ""
    assert runlib.list_models(tmp_path / "runs")[0].row()[:2] == ["tiny-shipped", "shipped"]

    monkeypatch.setattr("nslm.generate.api.pretrained_root", lambda: tmp_path / "none")
    ctx = build_app(runs_dir=tmp_path / "no-runs").nslm_context
    assert ctx.default_model() is None and "No model yet" in empty_state(ctx)


def test_choosing_a_preset_fills_in_its_shape_learning_rate_and_batch():
    from nslm.gui.train_tab import preset_defaults
    from nslm.models import load_preset, preset_train_defaults
    from nslm.train.config import DEFAULT_BATCH_SIZE

    cfg, lr, batch = preset_defaults("lstm-1m")
    assert (cfg.d_model, cfg.n_layer, cfg.context_length) == (128, 2, 256) == (
        load_preset("lstm-1m").d_model, load_preset("lstm-1m").n_layer, load_preset("lstm-1m").context_length)
    assert lr == preset_train_defaults("lstm-1m").get("lr", 2e-3)
    expected = preset_train_defaults("lstm-1m").get("batch_size", DEFAULT_BATCH_SIZE["cpu"])  # no GPU in tests
    assert batch == expected


def test_a_symlink_to_a_run_elsewhere_is_not_a_member_of_the_runs_folder(tmp_path):
    write_run(tmp_path / "elsewhere" / "real")
    runs = tmp_path / "runs"
    write_run(runs / "own")
    (runs / "link").symlink_to(tmp_path / "elsewhere" / "real")
    assert runlib.run_names(runs) == ["own"]
    assert [e.name for e in runlib.list_models(runs) if e.kind == "run"] == ["own"]
    with pytest.raises(NslmError, match="outside"):
        runlib.model_path("run:link", runs)  # what Load says, and what the live view says too


def test_shared_ngrams_are_counted_as_the_evaluation_counts_them():
    import numpy as np

    from nslm.eval.novelty import NgramSet, ngram_hashes

    story = "Lily's cat didn't want to go out. It was raining, so the cat slept."
    other = "LILY'S CAT didn't want to sleep; the cat slept."
    share = shared_ngram_share(story, other, 4)
    expected = NgramSet([np.unique(ngram_hashes(other, 4))]).contains(ngram_hashes(story, 4)).mean()
    assert share == pytest.approx(expected) == pytest.approx(2 / 11)
    assert mark_shared(story, other, 4).startswith("<mark>Lily's cat didn't want to</mark> go out.")


def test_a_nan_rating_is_refused_with_the_rating_store_sentence(tmp_path):
    from nslm.eval.human import RatingStore

    with pytest.raises(NslmError, match="grammar must be a whole number from 1 to 10"):
        RatingStore(tmp_path / "r.sqlite").add("m", "p", "story", float("nan"), 5, 5)


def test_a_run_folder_claiming_a_huge_model_is_listed_and_refused_without_building_it(tmp_path):
    """The issue's case: the shipped 1M weights beside a config.json edited to d_model 4096, 48 layers."""
    from nslm.generate.api import pretrained_root
    from nslm.gui.storytelling import ModelCache

    runs = tmp_path / "runs"
    shutil.copytree(pretrained_root() / "tinystories-transformer-1m", runs / "bloated")
    config = json.loads((runs / "bloated" / "config.json").read_text())
    config["model"].update(d_model=4096, n_layer=48, d_ff=16384, n_head=32)
    (runs / "bloated" / "config.json").write_text(json.dumps(config))
    entries = {e.name: e for e in runlib.list_models(runs) if e.kind == "run"}
    assert "bloated" in entries  # the list reads the folder's files only; nothing is built
    with pytest.raises(NslmError, match="parameters") as refused:
        ModelCache(runs).get("run:bloated")
    assert "\n" not in str(refused.value)


def _sets(args: list[str]) -> dict[str, str]:
    """The `--set key=value` pairs of an argument list; a later one wins, as in `nslm train`."""
    return dict(args[i + 1].split("=", 1) for i, arg in enumerate(args) if arg == "--set")


def test_a_short_run_from_the_page_evaluates_often_enough_to_draw_a_curve(data_dir):
    one_minute = check_form(TrainForm("transformer-1m", str(data_dir), 128, 4, 256, 2e-3, 32, "minutes", 1, "tf", ""))
    sets = _sets(one_minute.args)
    # at the slowest machine's speed one minute is a few dozen steps: the default (every 200) gave no point
    assert int(sets["train.eval_interval"]) < 10 and int(sets["train.log_interval"]) == 1
    tokens = 300_000
    short = _sets(check_form(TrainForm("transformer-1m", str(data_dir), 32, 1, 32, 3e-3, 4, "tokens", tokens, "tf",
                                       "")).args)
    steps = tokens / (4 * 32)
    assert steps / int(short["train.eval_interval"]) >= EVALUATIONS
    # each evaluation reads at most half the tokens trained between two, so it costs a small share of the time
    assert int(short["train.eval_tokens"]) <= int(short["train.eval_interval"]) * 4 * 32 / 2
    long = _sets(check_form(TrainForm("transformer-1m", str(data_dir), 128, 4, 256, 2e-3, 32, "minutes", 600, "tf",
                                      "")).args)
    assert (long["train.eval_interval"], long["train.eval_tokens"]) == ("200", "131072")  # the defaults
    mine = _sets(check_form(TrainForm("transformer-1m", str(data_dir), 128, 4, 256, 2e-3, 32, "minutes", 1, "tf",
                                      "train.eval_interval=7")).args)
    assert mine["train.eval_interval"] == "7"  # a value typed in the extra settings wins


def test_an_empty_loss_plot_keeps_numeric_axes():
    import gradio as gr

    from nslm.gui.train_tab import loss_frame

    plot = gr.LinePlot(x="step", y="loss", color="curve")
    for metrics in ([], [{"event": "train", "step": 1, "train_loss": 6.9}, {"event": "eval", "step": 1, "val_loss": 6.8}]):
        assert plot.postprocess(loss_frame(metrics)).datatypes == {"step": "quantitative", "loss": "quantitative",
                                                                   "curve": "nominal"}


def test_a_measure_whose_data_is_missing_says_what_to_download_and_is_not_ticked(monkeypatch):
    from nslm.eval.datasets import missing_data_hint
    from nslm.gui import eval_tab

    monkeypatch.setattr(eval_tab, "default_data_path", lambda name: None if name == "blimp" else "/somewhere")
    missing = eval_tab.missing_data()
    assert list(missing) == ["blimp"]
    text = eval_tab.data_markdown(missing)
    hint = missing_data_hint("blimp")
    assert "**blimp** cannot run yet" in text and hint[1:] in text and "github.com/alexwarstadt/blimp" in text
    monkeypatch.setattr(eval_tab, "default_data_path", lambda name: "/somewhere")
    assert eval_tab.missing_data() == {} and eval_tab.data_markdown({}) == ""
    assert eval_tab.stand_in_data() == {}


def test_without_the_papers_prompts_generate_stays_ticked_and_says_it_uses_nslms_own(monkeypatch):
    from nslm.eval.datasets import missing_data_hint
    from nslm.gui import eval_tab

    monkeypatch.setattr(eval_tab, "default_data_path", lambda name: None)
    missing, stand_ins = eval_tab.missing_data(), eval_tab.stand_in_data()
    assert set(missing) == {"blimp", "cola", "hellaswag"} and list(stand_ins) == ["generate"]
    text = eval_tab.data_markdown(missing, stand_ins)
    assert "**generate** runs on the small stand-in shipped with nslm" in text
    assert missing_data_hint("prompts")[1:] in text and "**generate** cannot run" not in text


def test_the_evaluation_job_block_says_its_state_and_escapes_the_log():
    from nslm.gui.eval_tab import job_html
    from nslm.gui.evaluation import JobView

    view = JobView("tiny<b>", "running", steps={"likelihood": "done", "blimp": "skipped"},
                   detail={"likelihood": "3 s", "blimp": "the BLiMP data was not found: <download it>"},
                   planned=("likelihood", "blimp", "cola"))
    block = job_html(view)
    assert block.startswith("<div data-job='evaluate' data-state='running'>")
    assert "✓ likelihood: done (3 s)" in block and "cola: waiting" in block
    assert "&lt;download it&gt;" in block and "tiny&lt;b&gt;" in block and "<download" not in block


def test_the_gui_builds_a_missing_novelty_index_in_the_background_at_a_low_priority(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from nslm.gui.evaluation import INDEX_JOB, EvaluationJobs
    from nslm.gui.processes import DetachedJobs
    from nslm.gui.storytelling import NeighbourFinder

    data = tmp_path / "data"
    data.mkdir()
    (data / "meta.json").write_text(json.dumps({"train": {"stories": 1200}}))
    # a stand-in for `python -m nslm eval novelty ...`: prints a progress line, then waits to be stopped
    stand_in = tmp_path / "python"
    stand_in.write_text("#!/bin/sh\necho 'novelty index:  34%|###   | 408/1200'\nexec sleep 60\n")
    stand_in.chmod(0o755)
    jobs = EvaluationJobs(tmp_path / "reports", DetachedJobs(tmp_path / "reports" / ".nslm-gui", python=str(stand_in)))
    assert "has no train.txt" in jobs.build_index_at_start(data)
    (data / "train.txt").write_text("A story.\n<|endoftext|>\nAnother story.\n")
    line = jobs.build_index_at_start(data)
    record = jobs.jobs.record(INDEX_JOB)
    try:
        assert "building it for" in line and "in the background, about 1-2 minutes on a 2-core CPU" in line
        assert record["command"][-4:] == ["eval", "novelty", "--data", str(data)]
        # the build runs below the app's priority, so telling stories stays quick meanwhile
        assert os.getpriority(os.PRIO_PROCESS, record["pid"]) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)
        deadline = time.time() + 10
        while jobs.index_progress(data) in (None, 0.0) and time.time() < deadline:
            time.sleep(0.1)
        assert jobs.index_progress(data) == pytest.approx(0.34)
        assert jobs.index_progress(tmp_path) is None  # another folder is not being indexed
        assert "already being built for" in jobs.build_index_at_start(data)  # one build at a time
        other = tmp_path / "other"
        other.mkdir()
        (other / "train.txt").write_text("A story.\n")
        assert "not started now" in jobs.build_index_at_start(other)  # nor a second build beside it
        monkeypatch.chdir(tmp_path)
        assert jobs.index_progress(Path("data")) == pytest.approx(0.34)  # the app may hold a relative path
        # meanwhile the closest-story panel says the index is on its way, not how to build it
        finder = NeighbourFinder(data)
        finder.build_progress = jobs.index_progress
        panel = finder.html(SimpleNamespace(config={}), "Once upon a time.")
        assert "being built in the background (34% done)" in panel and "Build the novelty index" not in panel
    finally:
        os.kill(record["pid"], signal.SIGKILL)
    deadline = time.time() + 10
    while jobs.index_progress(data) is not None and time.time() < deadline:
        time.sleep(0.1)
    assert jobs.index_progress(data) is None
    # a stopped build's stories are not counted in the time left
    monkeypatch.setattr("nslm.gui.evaluation.index_coverage", lambda folder: (600, 1200))
    line = jobs.build_index_at_start(data)
    try:
        assert "about 1 minute on" in line and "going on from the 600 stories embedded before" in line
    finally:
        os.kill(jobs.jobs.record(INDEX_JOB)["pid"], signal.SIGKILL)
    deadline = time.time() + 10
    while jobs.index_progress(data) is not None and time.time() < deadline:
        time.sleep(0.1)
    # an index of every training story is not built again
    (data / "novelty-index").mkdir()
    (data / "novelty-index" / "meta.json").write_text("{}")
    monkeypatch.setattr("nslm.gui.evaluation.index_coverage", lambda folder: (3, 3))
    assert "has one of all 3 training stories" in jobs.build_index_at_start(data)


def test_train_more_minutes_outside_its_range_gives_both_limits(tmp_path):
    launcher = TrainingLauncher(tmp_path / "runs")
    for minutes, shown in [(0, "not 0"), (-3, "not -3"), (1e9, "not 1e+09"), ("five", "e.g. 5."), (None, "e.g. 5.")]:
        with pytest.raises(NslmError, match="above 0 and at most 43,200") as caught:
            launcher.extend("any", minutes)
        assert str(caught.value).endswith(f"{shown}.") or shown in str(caught.value)
        assert "nan" not in str(caught.value)


def test_sweep_trials_are_shown_rounded_with_counts_whole():
    from nslm.gui.sweeps_tab import readable

    assert [readable(c) for c in ["1.4823368718781744", "0.6590909090909091", "1051776.0", "6329015992320.0", "3",
                                  "tf-b32", "", "nan", "-0.25", "12345.678"]] == [
        "1.4823", "0.6591", "1,051,776", "6.33e+12", "3", "tf-b32", "", "nan", "-0.2500", "12,345.7"]


def test_a_run_name_message_is_short_and_says_when_it_is_empty():
    with pytest.raises(NslmError, match="^Give a name"):
        runlib.check_name("")
    with pytest.raises(NslmError) as caught:
        runlib.check_name("x/" * 150)
    assert len(str(caught.value)) < 200 and "not a valid name" in str(caught.value)


def test_index_build_times_come_from_this_machines_own_build_once_it_has_one(tmp_path):
    """Before anything is embedded the estimate is a range over 2-core CPUs; once a build saved its progress
    (or finished), its own stories per second give the estimate."""
    from nslm.eval.novelty import NoveltyIndex
    from nslm.gui.evaluation import EMBED_STORIES_PER_S, build_seconds, measured_rate

    data = tmp_path / "data"
    data.mkdir()
    assert measured_rate(data) is None and build_seconds(1000, data) == 1000 / EMBED_STORIES_PER_S
    partial = NoveltyIndex.partial_folder(NoveltyIndex.default_folder(data))
    partial.mkdir()
    (partial / "progress.json").write_text(json.dumps({"embedded": 512, "seconds": 2.0}))
    assert measured_rate(data) is None  # too short to tell
    (partial / "progress.json").write_text(json.dumps({"embedded": 1024, "seconds": 40.0}))
    assert measured_rate(data) == pytest.approx(25.6) and build_seconds(2560, data) == pytest.approx(100.0)
    shutil.rmtree(partial)
    finished = NoveltyIndex.default_folder(data)
    finished.mkdir()
    (finished / "meta.json").write_text(json.dumps({"stories": 2000, "build_seconds": 100.0}))
    assert measured_rate(data) == pytest.approx(20.0)
