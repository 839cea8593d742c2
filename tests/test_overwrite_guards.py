"""`--overwrite` replaces only an earlier output of the same kind: never a user's folder or file, never what the
command reads; and an output option that names a file is refused when it is a folder, before any work."""

from __future__ import annotations

import shutil

import pytest

from nslm.cli import main

pytestmark = pytest.mark.slow


def _refused(argv: list[str], capsys, *phrases: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and "Traceback" not in err, err
    for phrase in phrases:
        assert phrase in err, err


def test_export_overwrite_replaces_only_an_earlier_export(tiny_run, tmp_path, capsys):
    run = shutil.copytree(tiny_run("transformer-1m"), tmp_path / "runs" / "a")
    capsys.readouterr()  # the fixture's training output
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    notes = tmp_path / "notes.txt"
    notes.write_text("notes")

    _refused(["export", str(run), str(precious), "--format", "hf", "--overwrite"], capsys, "is not an earlier export")
    _refused(["export", str(run), str(notes), "--format", "hf", "--overwrite"], capsys, "is not an earlier export")
    _refused(["export", str(run), str(notes), "--format", "gguf", "--overwrite"], capsys, "not an earlier GGUF file")
    _refused(["export", str(run), str(precious), "--format", "gguf", "--overwrite"], capsys, "is a folder")
    # the run itself, or a folder holding it
    _refused(["export", str(run), str(run), "--overwrite"], capsys, "which this command reads")
    _refused(["export", str(run), str(tmp_path / "runs"), "--overwrite"], capsys, "which this command reads")
    assert (precious / "thesis.txt").read_text() == "years of work" and notes.read_text() == "notes"
    assert (run / "model.safetensors").is_file()

    # an earlier export of either kind, or an empty folder, is replaced
    for fmt, out in (("hf", tmp_path / "hf"), ("gguf", tmp_path / "m.gguf")):
        assert main(["export", str(run), str(out), "--format", fmt]) == 0
        assert main(["export", str(run), str(out), "--format", fmt, "--overwrite"]) == 0
    (tmp_path / "empty").mkdir()
    assert main(["export", str(run), str(tmp_path / "empty"), "--overwrite"]) == 0
    assert (tmp_path / "empty" / "config.json").is_file()


def test_clean_overwrite_replaces_only_an_earlier_cleaned_folder(story_files, tmp_path, capsys):
    train, valid = story_files
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    base = ["data", "clean", "--train", *map(str, train), "--valid", str(valid), "--quiet"]

    _refused([*base, "--out", str(precious), "--overwrite"], capsys, "is not an earlier cleaned folder")
    assert (precious / "thesis.txt").read_text() == "years of work"
    inside = tmp_path / "inside"
    inside.mkdir()
    copied = shutil.copy(train[0], inside / "train-copy.txt")
    _refused(["data", "clean", "--train", str(copied), "--valid", str(valid), "--quiet", "--out", str(inside),
              "--overwrite"], capsys, "which this command reads")
    assert (inside / "train-copy.txt").is_file()

    out = tmp_path / "clean"
    assert main([*base, "--out", str(out)]) == 0
    assert main([*base, "--out", str(out), "--overwrite"]) == 0  # its own earlier output is replaced
    assert (out / "train.txt").is_file()


def test_a_file_output_that_is_a_folder_is_refused_before_the_work(tiny_run, tmp_path, capsys):
    run = tiny_run("transformer-1m")
    capsys.readouterr()
    folder = tmp_path / "a-folder"
    folder.mkdir()
    _refused(["eval", "generate", "--model", str(run), "--out", str(folder)], capsys, "is a folder")
    _refused(["bench", "train", "--preset", "transformer-1m", "--steps", "1", "--json", str(folder)], capsys,
             "is a folder")
    valid = tmp_path / "valid.txt"
    valid.write_text("Once upon a time there was a cat.\n<|endoftext|>\n")
    _refused(["tokenizer", "report", "--valid", str(valid), "--json", str(folder), str(run / "tokenizer.json")], capsys,
             "is a folder")
    assert not any(folder.iterdir())
