"""The dev split: carved from the training stories by a hash, disjoint from train, the same every time, and
the split that picks the kept checkpoint; folders made before it (no dev split) train exactly as before."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from nslm.data import DataFolder, clean_to_folder, prepare, read_cleaned
from nslm.data.prepare import is_dev_story
from nslm.train.metrics import read_metrics
from nslm.train.run import prepare_run, train_run

from conftest import TINY_SETTINGS

pytestmark = pytest.mark.timeout(300)


def test_dev_split_is_deterministic_and_disjoint_from_train(data_dir, story_files, tmp_path):
    folder = DataFolder(data_dir)
    assert folder.splits == ("train", "dev", "valid") and folder.selection_split == "dev"
    train = list(read_cleaned(data_dir / "train.txt"))
    dev = list(read_cleaned(data_dir / "dev.txt"))
    assert 10 < len(dev) < 0.05 * len(train)
    assert not set(dev) & set(train)
    assert all(is_dev_story(s, 0.02) for s in dev) and not any(is_dev_story(s, 0.02) for s in train)
    report = json.loads((data_dir / "report.json").read_text())
    assert report["dev"]["stories"] == len(dev) == folder.meta["dev"]["stories"]
    assert report["train"]["stories_out"] == len(train) + len(dev)
    ids = folder.split("dev").ids
    assert int((ids == folder.eot_id).sum()) == len(dev) and folder.split("dev").bytes == sum(len(s.encode()) for s in dev)
    # the same inputs give the same dev stories, whatever else differs (here the number of stories read)
    train_files, valid = story_files
    again = clean_to_folder(tmp_path / "again", [str(p) for p in train_files], [str(valid)], max_stories=700)
    picked = list(read_cleaned(tmp_path / "again" / "dev.txt"))
    assert again["dev"]["stories"] == len(picked) > 0 and set(picked) <= set(dev)


def test_a_folder_without_dev_split_reads_and_is_reused_as_before(story_files, tmp_path):
    train, valid = story_files
    args = ([str(p) for p in train], [str(valid)], tmp_path / "old")
    made = prepare(*args, vocab_size=300, max_stories=200, dev_share=0)
    assert not (made.path / "dev.txt").exists() and "dev" not in made.meta
    folder = DataFolder(made.path)
    assert folder.splits == ("train", "valid") and folder.selection_split == "valid" and not folder.has_dev
    with pytest.raises(Exception, match="no split 'dev'"):
        folder.split("dev")
    # `--if-exists reuse` with today's default share keeps the older folder as it is (the Makefile's call)
    reused = prepare(*args, vocab_size=300, max_stories=200, if_exists="reuse")
    assert reused.reused and "dev" not in reused.meta


def _random_valid(data_dir, out):
    """A copy of the data folder whose validation ids are uniform noise: its loss rises as the model learns,
    while the dev loss falls, so the two splits disagree on the best checkpoint."""
    shutil.copytree(data_dir, out)
    folder = DataFolder(out)
    n = folder.meta["valid"]["tokens"]
    noise = np.random.default_rng(0).integers(1, folder.vocab_size, n).astype(folder.dtype)
    noise.tofile(out / "valid.bin")
    return out


def _train(data, out):
    config, run_dir = prepare_run(out=out, data=data, overrides=[*TINY_SETTINGS, "train.sample_tokens=0"],
                                  train_options={"max_steps": 30, "device": "cpu", "dtype": "fp32"})
    result = train_run(config, run_dir)
    return result, [r for r in read_metrics(run_dir) if r.get("event") == "eval"]


def test_the_kept_checkpoint_is_chosen_by_dev_loss(data_dir, tmp_path):
    data = _random_valid(data_dir, tmp_path / "data")
    result, evals = _train(data, tmp_path / "run")
    val = [e["val_loss"] for e in evals]
    dev = [e["dev_loss"] for e in evals]
    assert val[-1] > val[0] and dev[-1] < dev[0]  # the set-up: the splits disagree
    assert [e["best"] for e in evals] == [d < min(dev[:i], default=float("inf")) for i, d in enumerate(dev)]
    assert evals[-1]["best"] and result["selected_by"] == "dev" and result["best_val_loss"] == pytest.approx(min(dev))
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["best_dev_loss"] == pytest.approx(min(dev)) and status["selected_by"] == "dev"
    assert all(e["dev_bpb"] > 0 and e["selected_by"] == "dev" for e in evals)

    # the same folder without its dev split: validation picks, as before dev splits existed
    meta = json.loads((data / "meta.json").read_text())
    del meta["dev"]
    (data / "meta.json").write_text(json.dumps(meta))
    result, evals = _train(data, tmp_path / "run-valid")
    assert [e["best"] for e in evals] == [True] + [False] * (len(evals) - 1)
    assert "dev_loss" not in evals[0] and result["selected_by"] == "valid"


def test_the_dev_split_does_not_change_the_tokenizer(story_files, tmp_path):
    # the tokenizer learns from every cleaned training story, so models trained before dev splits existed
    # (the shipped ones) still match a folder prepared today
    train, valid = story_files
    inputs = ([str(p) for p in train], [str(valid)])
    with_dev = prepare(*inputs, tmp_path / "dev", vocab_size=300, max_stories=400)
    without = prepare(*inputs, tmp_path / "nodev", vocab_size=300, max_stories=400, dev_share=0)
    assert with_dev.meta["dev"]["stories"] > 0 and "dev" not in without.meta
    assert with_dev.meta["tokenizer_sha256"] == without.meta["tokenizer_sha256"]
    assert DataFolder(with_dev.path).matches(without.meta["tokenizer_sha256"])


def test_train_share_keeps_nested_subsets_and_the_whole_dev_split(story_files, tmp_path):
    train_files, valid = story_files
    files = [str(p) for p in train_files]
    whole = clean_to_folder(tmp_path / "all", files, [str(valid)], max_stories=700)
    all_train = list(read_cleaned(tmp_path / "all" / "train.txt"))
    dev = list(read_cleaned(tmp_path / "all" / "dev.txt"))
    kept = {}
    for share in (0.25, 0.5):
        report = clean_to_folder(tmp_path / f"s{share}", files, [str(valid)], max_stories=700, train_share=share)
        kept[share] = list(read_cleaned(tmp_path / f"s{share}" / "train.txt"))
        assert list(read_cleaned(tmp_path / f"s{share}" / "dev.txt")) == dev  # dev does not shrink
        assert report["subset"]["left_out"] == len(all_train) - len(kept[share]) > 0
        assert report["train"]["stories_out"] == whole["train"]["stories_out"]  # cleaning saw the same stories
        assert abs(len(kept[share]) / len(all_train) - share) < 0.1
    assert set(kept[0.25]) < set(kept[0.5]) < set(all_train)  # a smaller share lies inside a larger one
    assert [s for s in all_train if s in set(kept[0.5])] == kept[0.5]  # the stories keep their order


@pytest.mark.parametrize("share", [0, -0.5, 1.5, float("nan")])
def test_train_share_out_of_range_is_one_clear_error(story_files, tmp_path, share):
    from nslm.errors import NslmError

    train_files, valid = story_files
    with pytest.raises(NslmError, match="--train-share must lie above 0 and at most 1"):
        clean_to_folder(tmp_path / "x", [str(p) for p in train_files], [str(valid)], train_share=share)
    assert not (tmp_path / "x" / "train.txt").exists()
