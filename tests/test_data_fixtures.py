"""The shared fixtures give what other tests rely on."""

import json

from nslm.data import DataFolder
from nslm.data.cleaning import is_complete
from nslm.sample_data import synthetic_stories
from nslm.tokenizer import Tokenizer


def test_data_dir_has_the_contract_files(data_dir):
    for name in ("train.txt", "valid.txt", "report.json", "tokenizer.json", "train.bin", "valid.bin", "meta.json"):
        assert (data_dir / name).is_file(), name
    meta = DataFolder(data_dir).meta
    # the real sample and the synthetic stand-in both fill the vocabulary that other tests count on
    assert meta["vocab_size"] == 1024 and meta["dtype"] == "uint16" and meta["tokenizer_kind"] == "bpe"
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


def test_make_data_dir_word_fills_its_vocabulary_and_leaves_unknown_words(make_data_dir):
    folder = make_data_dir("word", 2048)
    meta = DataFolder(folder).meta
    tok = Tokenizer.load(folder / "tokenizer.json")
    assert meta["vocab_size"] == 2048
    valid = DataFolder(folder).split("valid").ids
    assert 0 < int((valid == tok.unk_id).sum()) < 0.05 * len(valid)  # rare words, as in real text


def test_synthetic_stories_are_fixed_by_the_seed_and_varied():
    stories = synthetic_stories(300, seed=1)
    assert stories == synthetic_stories(300, seed=1) and stories != synthetic_stories(300, seed=2)
    assert len(set(stories)) == 300 and all(is_complete(s) and len(s.split()) >= 20 for s in stories)
    words = {w.lower().strip('.,!?"\'') for s in stories for w in s.split()}
    assert len(words) > 800
