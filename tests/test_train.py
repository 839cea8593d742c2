"""`nslm train`: run folder contract, exact resume, SIGTERM, and bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_SETTINGS
from nslm.cli import main
from nslm.errors import NslmError
from nslm.models import ModelConfig
from nslm.train.loop import learning_rate
from nslm.train.config import TrainConfig

# The session's tiny recipe with two layers and a window of 32 tokens, each log step written.
OWN = ("model.n_layer=2", "model.context_length=32", "train.batch_size=4", "train.log_interval=1",
       "train.sample_tokens=8")


# as `nslm train` arguments (test_checkpoint_crashes and test_run_lock import it)
TINY = [a for item in (*TINY_SETTINGS, *OWN) for a in ("--set", item)] + ["--dtype", "fp32", "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny(tiny_args):
    """`tiny(*settings)`: `nslm train` arguments of this module's recipe, then `settings`."""
    return lambda *settings: tiny_args(*OWN, *settings)


def train(*args) -> int:
    return main(["train", *args])


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_dir, tiny) -> Path:
    run = tmp_path_factory.mktemp("runs") / "tiny"
    assert train("--preset", "transformer-1m", "--data", str(data_dir), "--out", str(run), "--max-steps", "6",
                 *tiny("train.eval_interval=3")) == 0
    return run


def test_run_folder_follows_the_contract(finished_run, data_dir):
    run = finished_run
    for name in ("config.json", "tokenizer.json", "model.safetensors", "last/model.safetensors",
                 "last/state.safetensors", "last/state.json", "metrics.jsonl", "loss.png", "status.json"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    meta = json.loads((data_dir / "meta.json").read_text())
    assert config["model"]["vocab_size"] == meta["vocab_size"] == 1024
    assert config["tokenizer_sha256"] == meta["tokenizer_sha256"]
    assert config["data"]["path"] == str(data_dir.resolve())
    assert config["train"]["max_steps"] == 6 and config["model"]["d_model"] == 32
    assert set(config["params"]) == {"total", "embedding", "non_embedding"}
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == 6 and status["max_steps"] == 6
    assert {"pid", "updated"} <= set(status)
    lines = metrics(run)
    train_lines = [m for m in lines if m["event"] == "train"]
    eval_lines = [m for m in lines if m["event"] == "eval"]
    assert [m["step"] for m in train_lines] == [1, 2, 3, 4, 5, 6]
    assert {"step", "tokens", "elapsed_s", "train_loss", "lr", "tokens_per_s", "progress", "eta_s"} <= set(train_lines[0])
    assert train_lines[-1]["progress"] == 1.0 and train_lines[-1]["tokens"] == 6 * 4 * 32
    assert [m["step"] for m in eval_lines] == [3, 6]
    ev = eval_lines[-1]
    assert ev["val_estimated"] is True  # the 2048-token budget is smaller than the validation split
    assert abs(ev["val_ppl"] - torch.tensor(ev["val_loss"]).exp().item()) < 1e-3
    # bits per byte = nats per token * tokens / ln 2 / bytes of the split
    expected_bpb = ev["val_loss"] * meta["valid"]["tokens"] / torch.log(torch.tensor(2.0)).item() / meta["valid"]["bytes"]
    assert abs(ev["val_bpb"] - expected_bpb) < 1e-6
    assert ev["sample"].startswith("Once upon a time")


def test_checkpoints_are_safetensors_and_json_only(finished_run):
    state = json.loads((finished_run / "last" / "state.json").read_text())
    assert state["step"] == 6 and state["data_position"]["next_step"] == 6
    tensors = load_file(str(finished_run / "last" / "state.safetensors"))
    assert any(k.startswith("opt.") and k.endswith("exp_avg") for k in tensors)
    assert "rng.cpu_rank0" in tensors
    weights = load_file(str(finished_run / "model.safetensors"))
    assert "tok_emb.weight" in weights
    for path in finished_run.rglob("*"):
        assert path.suffix not in (".pt", ".pth", ".pkl", ".bin"), path


# dropout (its masks drawn from the restored generator) trains on one thread; without, the windows are shared
# out over two threads (nslm.train.step)
@pytest.mark.parametrize("optimizer,shards", [("adamw", "model.dropout=0.1"), ("muon", "model.dropout=0.1"),
                                              ("muon", "train.batch_threads=2")])
def test_resume_continues_exactly(tmp_path, data_dir, tiny, optimizer, shards):
    common = ["--preset", "transformer-1m", "--data", str(data_dir), "--max-steps", "8",
              *tiny("train.eval_interval=3", f"train.optimizer={optimizer}", shards)]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert train(*common, "--out", str(whole)) == 0
    assert train(*common, "--out", str(parts), "--set", "train.stop_after_steps=4") == 0
    assert json.loads((parts / "status.json").read_text())["state"] == "stopped"
    assert train("--resume", str(parts)) == 0
    assert json.loads((parts / "status.json").read_text())["state"] == "finished"
    loss_whole = {m["step"]: m["train_loss"] for m in metrics(whole) if m["event"] == "train"}
    loss_parts = {m["step"]: m["train_loss"] for m in metrics(parts) if m["event"] == "train"}
    assert sorted(loss_parts) == list(range(1, 9))
    for step in range(5, 9):
        assert abs(loss_whole[step] - loss_parts[step]) <= 1e-6, step
    a, b = load_file(str(whole / "last/model.safetensors")), load_file(str(parts / "last/model.safetensors"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)


def test_learning_rate_warms_up_then_decays_by_cosine():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate(cfg, 0, 0.0) == pytest.approx(1e-4)
    assert learning_rate(cfg, 9, 0.0) == pytest.approx(1e-3)
    assert learning_rate(cfg, 50, 0.5) == pytest.approx(0.55e-3)
    assert learning_rate(cfg, 100, 1.0) == pytest.approx(1e-4)


def test_learning_rate_with_a_cooldown_stays_flat_then_falls_linearly():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1, cooldown=0.25)
    assert learning_rate(cfg, 4, 0.0) == pytest.approx(0.5e-3)  # the same warmup
    assert learning_rate(cfg, 50, 0.5) == learning_rate(cfg, 90, 0.75) == pytest.approx(1e-3)
    assert learning_rate(cfg, 95, 0.875) == pytest.approx(0.55e-3)
    assert learning_rate(cfg, 100, 1.0) == pytest.approx(1e-4)


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path, data_dir, tiny):
    run = tmp_path / "sig"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "nslm", "train", "--preset", "transformer-1m", "--data",
                             str(data_dir), "--out", str(run), "--max-steps", "100000",
                             *tiny("train.eval_interval=100000")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (run / "metrics.jsonl").is_file() and len((run / "metrics.jsonl").read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "resume" in err
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "stopped"
    state = json.loads((run / "last" / "state.json").read_text())
    assert state["step"] == status["step"] >= 3
    assert (run / "model.safetensors").is_file()
    import nslm

    assert nslm.load(run).generate("Once upon a time", max_tokens=5).n_tokens <= 5


@pytest.mark.parametrize("args, words", [
    (["--preset", "transformer-1b"], "unknown preset"),
    (["--set", "train.lr=-1"], "train.lr"),
    (["--set", "model.context_length=0"], "context_length"),
    (["--set", "model.n_head=3"], "divide"),
    (["--set", "model.n_layers=3"], "unknown model setting"),
    (["--set", "lr=1"], "section.field=value"),
    (["--set", "train.min_lr_ratio=abc"], "train.min_lr_ratio must be a number, not 'abc'"),
    (["--set", "train.lr=NaN"], "train.lr must be a number, not nan"),
    (["--set", "train.compile=1"], "train.compile must be true or false (or null), not 1"),
    (["--set", "model.d_model=12.5"], "model.d_model must be a whole number, not 12.5"),
    (["--set", "train.max_steps=[3]"], "train.max_steps must be a whole number (or null), not [3]"),
    (["--set", f"train.seed={2**70}"], "train.seed must be a whole number from 0 to 9223372036854775807"),
    (["--set", "train.batch_size=100000000"], "needs about"),
    (["--set", "train.optimizer=sgd"], "train.optimizer must be one of adamw, muon, not 'sgd'"),
    (["--set", "train.muon_momentum=1"], "train.muon_momentum must be in [0, 1)"),
    (["--set", "train.cooldown=0"], "train.cooldown must be a share of the run in (0, 1]"),
    (["--set", "train.adamw_lr_ratio=0"], "train.adamw_lr_ratio must be a positive multiple of train.lr up to 100, not 0"),
])
def test_bad_settings_are_one_sentence_and_write_nothing(tmp_path, data_dir, capsys, args, words):
    run = tmp_path / "bad"
    base = ["--preset", "transformer-1m"] if "--preset" not in args else []
    assert train(*base, *args, "--data", str(data_dir), "--out", str(run), "--max-steps", "1") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and "Traceback" not in err
    assert not run.exists()


@pytest.mark.parametrize("cls, section", [(ModelConfig, "model"), (TrainConfig, "train")])
def test_every_setting_given_a_value_of_the_wrong_type_is_named(cls, section):
    for field in dataclasses.fields(cls):
        default = getattr(cls(), field.name)
        wrong = 3 if isinstance(default, str) else 1 if isinstance(default, bool) else "abc"
        with pytest.raises(NslmError, match=rf"^{section}\.{field.name} must be .*, not {wrong!r}$"):
            cls.from_dict({field.name: wrong})


def test_existing_run_and_foreign_data_are_refused(tmp_path, data_dir, make_data_dir, finished_run, capsys):
    assert train("--preset", "transformer-1m", "--data", str(data_dir), "--out", str(finished_run), "--max-steps", "1") == 2
    assert "--resume" in capsys.readouterr().err
    before = (finished_run / "last" / "state.json").read_text()
    other = make_data_dir("char", None)
    assert train("--resume", str(finished_run), "--data", str(other), "--max-steps", "9") == 2
    assert "another tokenizer" in capsys.readouterr().err
    assert (finished_run / "last" / "state.json").read_text() == before
    assert train("--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("content, words", [
    (b"\xff\xfe\x00binary", "is not UTF-8 text"),
    (b"[" * 100_000, "is not valid JSON"),
    (b'{"model": [1, 2]}', "'model' and 'train' must be tables"),
    (b'{"preset": 7}', "'preset' must be a preset name"),
    (b'{"train": {"lr": "fast"}}', "train.lr must be a number, not 'fast'"),
])
def test_a_bad_config_file_is_one_sentence(tmp_path, data_dir, capsys, content, words):
    (tmp_path / "run.json").write_bytes(content)
    assert train("--config", str(tmp_path / "run.json"), "--data", str(data_dir), "--out", str(tmp_path / "r")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("config", ["[]", '{"model": {}}', "[" * 100_000, '{"model": {}, "train": {}, "data": 3}'])
def test_resume_of_a_run_whose_config_json_is_damaged_is_one_sentence(tmp_path, finished_run, capsys, config):
    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    (run / "config.json").write_text(config)
    capsys.readouterr()
    assert train("--resume", str(run)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run / 'config.json'} is corrupt") and err.count("\n") == 1, err


def test_config_file_sets_model_and_training(tmp_path, data_dir):
    cfg = tmp_path / "run.toml"
    cfg.write_text('preset = "gru-1m"\n[model]\nd_model = 16\nrnn_hidden = 24\ncontext_length = 16\n'
                   '[train]\nbatch_size = 2\nmax_steps = 2\neval_tokens = 256\nsample_tokens = 4\n')
    run = tmp_path / "gru"
    assert train("--config", str(cfg), "--data", str(data_dir), "--out", str(run), "--device", "cpu") == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["arch"] == "gru" and config["model"]["rnn_hidden"] == 24
    assert config["train"]["lr"] == 0.01  # the preset's recommended learning rate
    assert json.loads((run / "status.json").read_text())["step"] == 2


def test_resume_from_a_corrupt_checkpoint_is_refused(tmp_path, finished_run, capsys):
    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    (run / "last" / "state.safetensors").write_bytes(b"\x80\x04junk")  # a pickle where tensors belong
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert train("--resume", str(run), "--max-steps", "9") == 2
    assert "pickle" in capsys.readouterr().err
    (run / "last" / "state.json").unlink()
    assert train("--resume", str(run), "--max-steps", "9") == 2
    assert "no last/state.json" in capsys.readouterr().err
    del before[run / "last" / "state.json"]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing overwritten


def test_threads_setting_applies_to_the_run_only(tmp_path, data_dir, tiny):
    before = torch.get_num_threads()
    assert train("--preset", "transformer-1m", "--data", str(data_dir), "--out", str(tmp_path / "t"), "--max-steps", "1",
                 *tiny("train.threads=1")) == 0
    assert torch.get_num_threads() == before


def test_batch_size_follows_the_device_unless_a_setting_or_the_preset_gives_it(data_dir):
    from nslm.train.config import DEFAULT_BATCH_SIZE
    from nslm.train.run import resolve_run_config

    def batch(preset, *overrides):
        config = resolve_run_config(data_dir, preset, overrides=list(overrides), train_options={"device": "cpu"})
        return config["train"]["batch_size"]

    assert batch("transformer-1m") == DEFAULT_BATCH_SIZE["cpu"] == 16  # written into config.json as a number
    assert batch("transformer-1m", "train.batch_size=3") == 3
    assert batch("transformer-1m-long") == 32  # the shipped model's recipe keeps its batch on any device
    assert TrainConfig().for_device(torch.device("cuda")).batch_size == DEFAULT_BATCH_SIZE["cuda"] == 32
    assert TrainConfig(batch_size=5).for_device(torch.device("cuda")).batch_size == 5
    with pytest.raises(NslmError, match="train.batch_size must be a positive whole number"):
        TrainConfig(batch_size=0).validate()


def test_batch_threads_follow_the_cores_on_a_cpu_only(data_dir, monkeypatch):
    from nslm.train.run import resolve_run_config

    def shards(*overrides):
        config = resolve_run_config(data_dir, "transformer-1m", overrides=list(overrides), train_options={"device": "cpu"})
        return config["train"]["batch_threads"]

    assert shards("train.threads=2") == 2  # written into config.json, so a resume shards the same way
    assert shards("train.threads=3", "train.batch_size=2") == 2  # at most one per window
    assert shards("train.batch_threads=1") == 1
    assert shards("train.threads=2", "train.compile=true") == 1
    assert TrainConfig(batch_threads=4).for_device(torch.device("cuda")).batch_threads == 1
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun each process is already a core
    assert TrainConfig(threads=2).for_device(torch.device("cpu")).batch_threads == 1
    with pytest.raises(NslmError, match="train.batch_threads must be a positive whole number"):
        TrainConfig(batch_threads=0).validate()
    assert TrainConfig().for_device(torch.device("cpu"), dropout=0.1).batch_threads == 1  # its masks would not repeat
    with pytest.raises(NslmError, match="train.batch_threads 2 needs model.dropout 0"):
        TrainConfig(batch_threads=2).for_device(torch.device("cpu"), dropout=0.1)


def test_windows_shared_out_over_threads_train_as_one_thread_does(tmp_path, data_dir, tiny):
    """The speed lever changes the order of additions only: the same losses to rounding."""
    losses = []
    for shards in (1, 2):
        run = tmp_path / f"s{shards}"
        assert train("--preset", "transformer-1m", "--data", str(data_dir), "--out", str(run), "--max-steps", "6",
                     *tiny("train.eval_interval=6", f"train.batch_threads={shards}")) == 0
        losses.append([m["train_loss"] for m in metrics(run) if m["event"] == "train"]
                      + [m["val_loss"] for m in metrics(run) if m["event"] == "eval"])
    assert len(losses[0]) == 7
    for a, b in zip(*losses):
        assert abs(a - b) < 1e-4


def test_the_transformer_preset_trains_with_muon_and_the_long_one_with_adamw(data_dir):
    from nslm.train.run import resolve_run_config

    def train_settings(preset):
        return resolve_run_config(data_dir, preset, train_options={"device": "cpu"})["train"]

    assert (train_settings("transformer-1m")["optimizer"], train_settings("transformer-1m")["lr"]) == ("muon", 0.01)
    assert (train_settings("transformer-1m-long")["optimizer"], train_settings("transformer-1m-long")["lr"]) == ("adamw", 0.003)
    assert train_settings("lstm-1m")["optimizer"] == "adamw"
