"""The efficiency report and the side-by-side comparison."""

import json

from nslm.cli import main
from nslm.data import read_cleaned
from nslm.tokenizer import Tokenizer
from nslm.tokenizer.report import comparison_markdown, efficiency_report


def test_efficiency_numbers(make_data_dir, data_dir):
    stories = list(read_cleaned(data_dir / "valid.txt"))
    n_bytes = sum(len(s.encode()) for s in stories)
    bpe = efficiency_report(Tokenizer.load(data_dir), stories)
    tokens = sum(len(Tokenizer.load(data_dir).encode(s)) for s in stories)
    assert bpe["tokens"] == tokens and bpe["bytes"] == n_bytes
    assert abs(bpe["bytes_per_token"] - n_bytes / tokens) < 1e-9
    assert bpe["round_trip"] == 1.0 and bpe["unk_rate"] == 0.0
    char = efficiency_report(Tokenizer.load(make_data_dir("char", None)), stories)
    word = efficiency_report(Tokenizer.load(make_data_dir("word", 2048)), stories)
    # a character is about a byte; BPE and word tokens cover several
    assert 0.95 < char["bytes_per_token"] < 1.05
    assert 3 < bpe["bytes_per_token"] and 3 < word["bytes_per_token"]
    assert 0 <= word["unk_rate"] < 0.05 and word["round_trip"] <= 1.0
    table = comparison_markdown([bpe, word, char])
    assert table.count("\n") == 7 and "| bytes per token |" in table


def test_report_cli_side_by_side(make_data_dir, data_dir, tmp_path, capsys):
    paths = [str(data_dir / "tokenizer.json"), str(make_data_dir("char", None) / "tokenizer.json")]
    out = tmp_path / "eff.json"
    assert main(["tokenizer", "report", *paths, "--valid", str(data_dir / "valid.txt"), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "bytes per token" in printed and "(bpe)" in printed and "(char)" in printed
    rows = json.loads(out.read_text())
    assert [r["kind"] for r in rows] == ["bpe", "char"] and rows[0]["stories"] == rows[1]["stories"]
    assert main(["tokenizer", "report", paths[0], "--valid", str(data_dir / "valid.txt"), "--markdown"]) == 0
    assert capsys.readouterr().out.startswith("| measure |")


def test_tokenizer_train_cli_errors(data_dir, tmp_path, capsys):
    args = ["tokenizer", "train", "--input", str(data_dir / "valid.txt"), "--out", str(tmp_path / "t")]
    assert main([*args, "--kind", "unigram"]) == 2
    assert "unknown tokenizer kind 'unigram'" in capsys.readouterr().err
    assert main([*args, "--kind", "bpe", "--vocab-size", "10"]) == 2
    assert "too small" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
    assert main([*args, "--kind", "char"]) == 0
    assert Tokenizer.load(tmp_path / "t").kind == "char"
    assert main([*args, "--kind", "char"]) == 2
    assert "already holds a tokenizer.json" in capsys.readouterr().err
