"""`nslm data prepare` and the single-step commands, end to end through the CLI."""

import hashlib
import json

import numpy as np
import pytest
import torch

from nslm.cli import main
from nslm.data import DataFolder, prepare, read_cleaned
from nslm.data.tokens import dtype_for
from nslm.errors import NslmError
from nslm.tokenizer import Tokenizer
from nslm.train.windows import random_batch

FILES = ("train.txt", "dev.txt", "valid.txt", "report.json", "tokenizer.json", "train.bin", "dev.bin", "valid.bin",
         "meta.json")


def _args(story_files, out, *extra):
    train, valid = story_files
    return ["data", "prepare", "--train", *map(str, train), "--valid", str(valid), "--out", str(out),
            "--vocab-size", "300", "--max-stories", "300", "--quiet", *extra]


def test_token_files_match_the_contract(data_dir):
    meta = DataFolder(data_dir).meta
    tok = Tokenizer.load(data_dir / "tokenizer.json")
    assert meta["tokenizer_sha256"] == hashlib.sha256((data_dir / "tokenizer.json").read_bytes()).hexdigest()
    assert meta["eot_id"] == tok.eot_id == 0
    for split in ("train", "dev", "valid"):
        stories = list(read_cleaned(data_dir / f"{split}.txt"))
        ids = DataFolder(data_dir).split(split).ids
        assert ids.dtype == np.dtype("<u2") and meta[split]["file"] == f"{split}.bin"
        assert meta[split]["stories"] == len(stories)
        assert meta[split]["bytes"] == sum(len(s.encode()) for s in stories)
        expected = []
        for s in stories[:5]:
            expected += tok.encode(s) + [tok.eot_id]
        assert ids[:len(expected)].tolist() == expected
        assert ids[-1] == tok.eot_id
    ids = DataFolder(data_dir).split("valid").ids
    x, y = random_batch(ids, 4, 64, torch.Generator().manual_seed(0))
    assert x.shape == (4, 64) and (x[:, 1:] == y[:, :-1]).all()
    # the batch is read in one indexed step; it must hold exactly the windows the seeded starts name
    starts = torch.randint(0, len(ids) - 64, (4,), generator=torch.Generator().manual_seed(0)).tolist()
    for row, s in enumerate(starts):
        assert x[row].tolist() == ids[s : s + 64].tolist() and y[row].tolist() == ids[s + 1 : s + 65].tolist()


def test_prepare_cli_writes_the_folder_and_reuses_it(story_files, tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(_args(story_files, out)) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temporary folders left
    stamp = (out / "train.bin").stat().st_mtime_ns
    assert main(_args(story_files, out)) == 2
    assert "already holds this dataset; pass --if-exists" in capsys.readouterr().err
    assert main(_args(story_files, out, "--if-exists", "reuse")) == 0
    assert "reusing" in capsys.readouterr().out
    assert (out / "train.bin").stat().st_mtime_ns == stamp
    # another setting is a different dataset: reuse and error refuse, overwrite replaces
    assert main(_args(story_files, out, "--if-exists", "reuse", "--min-words", "30")) == 2
    assert "already holds a different dataset" in capsys.readouterr().err
    assert main(_args(story_files, out, "--min-words", "30")) == 2
    assert main(_args(story_files, out, "--if-exists", "overwrite", "--min-words", "30")) == 0
    assert DataFolder(out).meta["prepare"]["settings"]["clean"]["min_words"] == 30


def test_reuse_rebuilds_nothing_when_incomplete(story_files, tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(_args(story_files, out)) == 0
    (out / "valid.bin").unlink()
    assert main(_args(story_files, out, "--if-exists", "reuse")) == 2
    assert "pass --if-exists overwrite" in capsys.readouterr().err


def test_word_and_char_kinds(make_data_dir):
    word = make_data_dir("word", 2048)
    assert (word / "casing.json").is_file() and DataFolder(word).meta["tokenizer_kind"] == "word"
    char = make_data_dir("char", None)
    meta = DataFolder(char).meta
    assert meta["tokenizer_kind"] == "char" and meta["vocab_size"] < 400
    assert not (char / "casing.json").exists()


def test_held_out_validation_is_reported(story_files, tmp_path, capsys):
    train, _ = story_files
    out = tmp_path / "held"
    code = main(["data", "prepare", "--train", str(train[0]), "--out", str(out), "--vocab-size", "300",
                 "--valid-share", "0.05"])
    assert code == 0
    printed = " ".join(capsys.readouterr().out.split())  # a table's title wraps to the table's width
    assert "held out: 5% of the input" in printed and "bytes per token" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["held_out"]["share"] == 0.05 and report["valid"]["stories_out"] > 30


@pytest.mark.parametrize("extra, message", [
    (["--tokenizer", "sentencepiece"], "unknown tokenizer kind 'sentencepiece'"),
    (["--vocab-size", "100"], "vocabulary size 100 is too small for a bpe tokenizer"),
    (["--tokenizer", "word", "--vocab-size", "2"], "too small for a word tokenizer"),
    (["--min-words", "100000", "--max-words", "0"], "no train stories are left"),
])
def test_bad_settings_leave_no_output(story_files, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert main(_args(story_files, out) + extra) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("error: ")
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs_leave_no_output(tmp_path, capsys, story_files):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 100)
    plain = tmp_path / "plain.txt"
    plain.write_text("A story without any separator. It goes on and on.\n" * 20)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    cases = [(tmp_path / "missing.txt", "does not exist"), (junk, "not text (binary data)"),
             (plain, "no <|endoftext|> story separators"), (empty, "is empty")]
    for path, message in cases:
        out = tmp_path / "out"
        assert main(["data", "prepare", "--train", str(path), "--valid", str(story_files[1]), "--out", str(out),
                     "--quiet"]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_foreign_output_folder_is_refused(story_files, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    for mode in ("error", "reuse", "overwrite"):
        assert main(_args(story_files, out, "--if-exists", mode)) == 2
        assert "not an nslm data folder" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"


def test_single_steps_give_the_same_token_files(story_files, tmp_path):
    train, valid = story_files
    clean = tmp_path / "clean"
    common = ["--train", *map(str, train), "--valid", str(valid), "--max-stories", "300"]
    assert main(["data", "clean", *common, "--out", str(clean), "--quiet"]) == 0
    assert sorted(p.name for p in clean.iterdir()) == ["dev.txt", "report.json", "train.txt", "valid.txt"]
    tok_dir = tmp_path / "tok"
    # prepare's tokenizer learns from every cleaned training story, the dev split's included
    assert main(["tokenizer", "train", "--kind", "bpe", "--vocab-size", "300", "--input", str(clean / "train.txt"),
                 str(clean / "dev.txt"), "--out", str(tok_dir)]) == 0
    assert main(["data", "tokenize", str(clean), "--tokenizer", str(tok_dir / "tokenizer.json")]) == 0
    whole = prepare([str(p) for p in train], [str(valid)], tmp_path / "whole", vocab_size=300, max_stories=300)
    for name in ("train.txt", "dev.txt", "valid.txt", "tokenizer.json", "train.bin", "dev.bin", "valid.bin"):
        assert (clean / name).read_bytes() == (whole.path / name).read_bytes(), name
    assert DataFolder(clean).meta["valid"] == whole.meta["valid"]


def test_reading_a_foreign_or_corrupt_folder(data_dir, tmp_path):
    with pytest.raises(NslmError, match="no meta.json"):
        DataFolder(tmp_path).meta
    (tmp_path / "meta.json").write_text('{"format": "something-else"}')
    with pytest.raises(NslmError, match="not an nslm token header"):
        DataFolder(tmp_path).meta
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "meta.json").write_bytes((data_dir / "meta.json").read_bytes())
    (copy / "train.bin").write_bytes((data_dir / "train.bin").read_bytes()[:-6])
    with pytest.raises(NslmError, match="truncated or foreign"):
        DataFolder(copy).split("train").ids
    with pytest.raises(NslmError, match="token file .* is missing"):
        DataFolder(copy).split("valid").ids


def test_dtype_choice():
    assert dtype_for(4096) == "uint16" and dtype_for(65535) == "uint16" and dtype_for(65536) == "uint32"


def test_every_subcommand_help_has_an_example(capsys):
    for cmd in (["data", "prepare"], ["data", "clean"], ["data", "tokenize"], ["tokenizer", "train"],
                ["tokenizer", "report"]):
        with pytest.raises(SystemExit):
            main([*cmd, "--help"])
        assert "example:" in capsys.readouterr().out


def test_switches_reach_the_cleaner(story_files, tmp_path):
    out = tmp_path / "raw"
    assert main(_args(story_files, out, "--no-normalize-quotes", "--no-drop-incomplete", "--no-near-dup",
                      "--min-words", "0")) == 0
    settings = DataFolder(out).meta["prepare"]["settings"]["clean"]
    assert settings["normalize_quotes"] is False and settings["drop_incomplete"] is False
    assert settings["dedup_near"] is False and settings["fix_encoding"] is True and settings["min_words"] == 0


def test_area_without_step_prints_help(capsys):
    assert main(["data"]) == 2 and "prepare" in capsys.readouterr().out
    assert main(["tokenizer"]) == 2 and "report" in capsys.readouterr().out


def test_data_match_prints_the_folder_made_with_the_models_tokenizer(data_dir, tmp_path, capsys):
    """As `make shipped-reports` uses it: each shipped model on the data folder of its own tokenizer."""
    other = tmp_path / "other"  # a data folder made with another tokenizer (only its header is read)
    other.mkdir()
    meta = json.loads((data_dir / "meta.json").read_text())
    (other / "meta.json").write_text(json.dumps({**meta, "tokenizer_sha256": "0" * 64}))
    run = tmp_path / "run"
    run.mkdir()
    config = {"model": {}, "train": {}, "data": {"path": "gone"}, "tokenizer_sha256": meta["tokenizer_sha256"]}
    (run / "config.json").write_text(json.dumps(config))
    assert main(["data", "match", "--model", str(run), str(other), str(tmp_path), str(data_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(data_dir)  # the wrong tokenizer and a non-data folder passed over
    assert main(["data", "match", "--model", str(run), str(other)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no data folder among") and str(other) in err and meta["tokenizer_sha256"][:12] in err
