"""The shared fixtures give what other tests rely on."""

import json

from nslm.data import DataFolder
from nslm.tokenizer import Tokenizer


def test_data_dir_has_the_contract_files(data_dir):
    for name in ("train.txt", "valid.txt", "report.json", "tokenizer.json", "train.bin", "valid.bin", "meta.json"):
        assert (data_dir / name).is_file(), name
    meta = DataFolder(data_dir).meta
    # the synthetic fallback corpus is too small for 1024 merges; real stories fill the vocabulary
    assert 300 < meta["vocab_size"] <= 1024 and meta["dtype"] == "uint16" and meta["tokenizer_kind"] == "bpe"
    train = DataFolder(data_dir).split("train").ids
    assert len(train) == meta["train"]["tokens"] > 100_000
    assert int((train == meta["eot_id"]).sum()) == meta["train"]["stories"]
    tok = Tokenizer.load(data_dir / "tokenizer.json")
    assert tok.sha256 == meta["tokenizer_sha256"]
    assert json.loads((data_dir / "report.json").read_text())["valid"]["stories_out"] == meta["valid"]["stories"]


def test_make_data_dir_word_has_casing(make_data_dir):
    folder = make_data_dir("word", 2048)
    casing = json.loads((folder / "casing.json").read_text())
    assert casing.get("i") == "I"
    assert DataFolder(folder).meta["tokenizer_kind"] == "word"
