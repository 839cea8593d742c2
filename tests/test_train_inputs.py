"""Bad input to `nslm train` and `nslm data tokenize` is refused in one line, before anything is written: a damaged
last/state.safetensors, token ids outside the vocabulary, an empty validation split, an unreadable story file."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from nslm.cli import main
from nslm.data.tokens import DataFolder, largest_id
from nslm.errors import NslmError
from test_train import TINY


def files_of(folder: Path) -> dict[Path, bytes]:
    """Every file under `folder` and its bytes (the lock file, rewritten by each attempt, left out)."""
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != ".train.lock"}


def one_line_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err.rsplit("\r", 1)[-1]  # what a progress bar, wiped by "\r", leaves on the screen
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


# ---------------------------------------------------------------- F9: a damaged last/state.safetensors
@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, data_dir) -> Path:
    """A run stopped after 2 of 4 steps (Muon beside AdamW, as the transformer preset trains)."""
    run = tmp_path_factory.mktemp("stopped") / "run"
    assert main(["train", "--data", str(data_dir), "--out", str(run), "--max-steps", "4",
                 "--set", "train.stop_after_steps=2", *TINY]) == 0
    return run


def _first(tensors: dict, name: str) -> str:
    return next(k for k in tensors if k.startswith("opt.") and k.endswith(f".{name}"))


def _reshape(t):
    key = _first(t, "momentum_buffer")
    return dict(t, **{key: torch.zeros(3)}), f"{key} has shape [3]"


def _nan(t):
    key = _first(t, "momentum_buffer")
    return dict(t, **{key: torch.full_like(t[key], float("nan"))}), f"{key} holds NaN"


def _nan_adam(t):
    key = _first(t, "exp_avg_sq")
    bad = t[key].clone()
    bad.view(-1)[0] = float("inf")
    return dict(t, **{key: bad}), f"{key} holds NaN or infinite"


def _short_rng(t):
    return dict(t, **{"rng.cpu_rank0": torch.zeros(5, dtype=torch.uint8)}), "rng.cpu_rank0 must be a CPU random-generator state"


def _no_rng(t):
    return {k: v for k, v in t.items() if not k.startswith("rng.")}, "rng.cpu_rank0"


def _no_optimizer(t):
    return {k: v for k, v in t.items() if not k.startswith("opt.")}, "optimizer state of parameter 0"


def _one_missing(t):
    key = _first(t, "exp_avg")
    return {k: v for k, v in t.items() if k != key}, f"no tensor {key}"


def _foreign_parameter(t):
    return dict(t, **{"opt.999.exp_avg": torch.zeros(2)}), "opt.999.exp_avg belongs to parameter 999"


@pytest.mark.parametrize("damage", [lambda t: ({}, "holds no tensors"), _reshape, _nan, _nan_adam, _short_rng, _no_rng,
                                    _no_optimizer, _one_missing, _foreign_parameter])
def test_a_damaged_state_safetensors_is_refused_and_the_run_stays_resumable(tmp_path, stopped_run, capsys, damage):
    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    path = run / "last" / "state.safetensors"
    good = path.read_bytes()
    damaged, words = damage(load_file(str(path)))
    save_file(damaged, str(path), metadata={"format": "pt"})
    before = files_of(run)
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    one_line_error(capsys, "last/state.safetensors is damaged", words, "cannot be resumed")
    assert files_of(run) == before  # status.json still says "stopped", not "failed"
    assert json.loads((run / "status.json").read_text())["state"] == "stopped"
    path.write_bytes(good)  # once the file is mended the run resumes
    assert main(["train", "--resume", str(run)]) == 0
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


# ---------------------------------------------------------------- F10: ids outside the vocabulary
def _copy_data(data_dir: Path, dest: Path) -> Path:
    shutil.copytree(data_dir, dest)
    return dest


@pytest.mark.parametrize("split", ["train", "valid"])
def test_token_ids_outside_the_vocabulary_are_refused_before_the_run_folder_is_made(tmp_path, data_dir, capsys, split):
    data = _copy_data(data_dir, tmp_path / "data")
    ids = np.memmap(data / f"{split}.bin", dtype="<u2", mode="r+")
    ids[::7] = 65000
    ids.flush()
    del ids
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--out", str(out), "--max-steps", "2", *TINY]) == 2
    one_line_error(capsys, f"{data / f'{split}.bin'} holds token id 65000", "vocabulary of 1024")
    assert not out.exists()
    with pytest.raises(NslmError, match="holds token id 65000"):
        DataFolder(data).split(split)


def test_eval_likelihood_refuses_ids_outside_the_vocabulary(tmp_path, data_dir, stopped_run, capsys):
    data = _copy_data(data_dir, tmp_path / "data")
    ids = np.memmap(data / "valid.bin", dtype="<u2", mode="r+")
    ids[-1] = 1024
    ids.flush()
    del ids
    capsys.readouterr()
    assert main(["eval", "likelihood", "--model", str(stopped_run), "--data", str(data)]) == 2
    one_line_error(capsys, "valid.bin holds token id 1024")


@pytest.mark.parametrize("dtype", ["<u2", "<u4"])
def test_largest_id_reads_every_chunk(tmp_path, dtype):
    path = tmp_path / "ids.bin"
    ids = np.arange(1000, dtype=dtype) % 50
    ids[999] = 77  # in the last, partial chunk
    ids.tofile(path)
    assert largest_id(path, np.dtype(dtype), chunk=64) == 77
    ids[999], ids[64] = 3, 90  # first id of the second chunk
    ids.tofile(path)
    assert largest_id(path, np.dtype(dtype), chunk=64) == 90
    path.write_bytes(b"")
    assert largest_id(path, np.dtype(dtype), chunk=64) is None


# ---------------------------------------------------------------- F11: an empty validation split
def test_an_empty_validation_split_is_refused_before_the_run_folder_is_made(tmp_path, data_dir, capsys):
    data = _copy_data(data_dir, tmp_path / "data")
    (data / "valid.bin").write_bytes(b"")
    meta = json.loads((data / "meta.json").read_text())
    meta["valid"]["tokens"] = 0
    (data / "meta.json").write_text(json.dumps(meta))
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--out", str(out), "--max-steps", "2", *TINY]) == 2
    one_line_error(capsys, "validation split", "has 0 tokens")
    assert not out.exists()


def test_a_run_folder_without_a_checkpoint_is_not_offered_for_resume(tmp_path, data_dir, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("{}")
    capsys.readouterr()
    assert main(["train", "--data", str(data_dir), "--out", str(out), "--max-steps", "2", *TINY]) == 2
    err = one_line_error(capsys, "no checkpoint to resume from")
    assert "--resume" not in err


@pytest.fixture
def cleaned(tmp_path, data_dir) -> Path:
    """A folder as `nslm data clean` leaves it: train.txt and valid.txt only."""
    folder = tmp_path / "clean"
    folder.mkdir()
    for name in ("train.txt", "valid.txt"):
        shutil.copyfile(data_dir / name, folder / name)
    return folder


@pytest.mark.parametrize("valid", [b"", b"\n \n", b"\x00\x01\x02\xff" * 2000, f"{'<|endoftext|>'}\n".encode()])
def test_tokenize_refuses_an_empty_or_binary_valid_txt_and_leaves_nothing(cleaned, data_dir, capsys, valid):
    (cleaned / "valid.txt").write_bytes(valid)
    before = files_of(cleaned)
    capsys.readouterr()
    assert main(["data", "tokenize", str(cleaned), "--tokenizer", str(data_dir / "tokenizer.json")]) == 2
    one_line_error(capsys, "valid.txt")
    assert files_of(cleaned) == before
    assert sorted(p.name for p in cleaned.iterdir()) == ["train.txt", "valid.txt"]


def test_an_error_while_tokenizing_leaves_the_old_data_folder_as_it_was(cleaned, data_dir, make_data_dir, capsys,
                                                                         monkeypatch):
    prepare_module = sys.modules["nslm.data.prepare"]  # the package exports a function of the same name

    tokenizer = str(data_dir / "tokenizer.json")
    other = make_data_dir("char", None) / "tokenizer.json"  # another tokenizer: other ids, another header
    assert main(["data", "tokenize", str(cleaned), "--tokenizer", tokenizer]) == 0
    before = files_of(cleaned)
    real = prepare_module.write_tokens

    def failing(tok, stories, path, **kwargs):  # valid.bin fails once train.bin is written
        if Path(path).name == "valid.bin":
            raise NslmError(f"{cleaned / 'valid.txt'} could not be read")
        return real(tok, stories, path, **kwargs)

    monkeypatch.setattr(prepare_module, "write_tokens", failing)
    capsys.readouterr()
    assert main(["data", "tokenize", str(cleaned), "--tokenizer", str(other)]) == 2
    one_line_error(capsys, "valid.txt")
    assert files_of(cleaned) == before
    assert not [p for p in cleaned.iterdir() if p.name.startswith(".")]
    DataFolder(cleaned).split("valid")
