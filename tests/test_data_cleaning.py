"""Cleaning rules on a hand-made file with known broken, truncated, duplicated and leaked stories."""

import json

import pytest

from nslm.data import CleanConfig, Cleaner, clean_to_folder, fix_encoding, read_cleaned, read_stories
from nslm.data.cleaning import is_complete, normalize_quotes, normalize_whitespace, words_of
from nslm.errors import NslmError
from nslm.sample_data import shared_data_dir
from nslm.tokenizer import EOT


def _write(path, stories):
    path.write_text("".join(f"{s}\n{EOT}\n" for s in stories), encoding="utf-8")
    return path


def _one_word_changed(story):
    words = story.split(" ")
    middle = len(words) // 2
    words[middle] = "zebra" if words[middle] != "zebra" else "giraffe"
    return " ".join(words)


@pytest.fixture(scope="module")
def handmade(story_files, tmp_path_factory):
    """A train and a valid file whose cleaning outcome is known story by story."""
    train_files, valid_file = story_files
    train = list(read_cleaned(train_files[0]))
    valid = list(read_cleaned(valid_file))[:5]
    with_apostrophe = [f"{s} It's a good day." for s in train[20:22]]
    good = train[:10]
    rows = list(good)
    rows += [s.replace("'", "â€™") for s in with_apostrophe]                 # 2 mojibake, repaired and kept
    rows.append(train[12][:200] + " \ufffd\ufffd\ufffd " + train[12][200:])    # 1 unreadable
    rows += [s.rsplit(" ", 3)[0] for s in train[13:15]]                        # 2 cut off mid-sentence
    rows.append("The cat sat. It was happy.")                                 # 1 too short
    rows.append(good[0])                                                       # exact duplicate
    rows.append("  " + good[1].upper().replace(". ", ".   "))                  # duplicate up to case/spacing
    rows.append(_one_word_changed(good[2]))                                    # near duplicate
    rows.append(valid[0])                                                      # leakage, exact
    rows.append(_one_word_changed(valid[1]))                                   # leakage, near
    folder = tmp_path_factory.mktemp("handmade")
    return {"train": _write(folder / "train.txt", rows), "valid": _write(folder / "valid.txt", valid),
            "good": good, "fixed": with_apostrophe, "valid_stories": valid}


def _removed(split_report):
    return {r["rule"]: r["removed"] for r in split_report["rules"]}


def test_report_numbers_on_handmade_file(handmade, tmp_path):
    # no dev split: every kept story stays in train.txt, where the test reads them back
    report = clean_to_folder(tmp_path, [handmade["train"]], [handmade["valid"]], dev_share=0)
    train = report["train"]
    assert train["stories_in"] == 21 and train["stories_out"] == 12
    assert _removed(train) == {"oversized": 0, "unreadable": 1, "incomplete": 2, "too_short": 1, "too_long": 0, "leakage": 2,
                               "exact_duplicate": 2, "near_duplicate": 1, "vocab_limit": 0}
    assert train["changed"]["encoding"]["stories"] == 2
    # the funnel adds up: each rule's out is the next rule's in
    for before, after in zip(train["rules"], train["rules"][1:]):
        assert before["out"] == after["in"]
    assert train["rules"][-1]["out"] == 12
    assert "\ufffd" in train["rules"][1]["examples"][0]
    kept = list(read_cleaned(tmp_path / "train.txt"))
    assert kept == handmade["good"] + handmade["fixed"]  # repaired mojibake is the original text again
    assert list(read_cleaned(tmp_path / "valid.txt")) == handmade["valid_stories"]
    assert report["valid"]["stories_out"] == 5 and report["held_out"] is None
    assert train["words_out"] == sum(len(s.split()) for s in kept) - sum(s.count(" - ") for s in kept)
    assert train["vocabulary_out"] == len({w for s in kept for w in words_of(s)}) > 50
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["train"]["stories_out"] == 12


def test_rules_switch_off(handmade, tmp_path):
    config = CleanConfig(fix_encoding=False, drop_incomplete=False, min_words=0, dedup_exact=False,
                         dedup_near=False, drop_leakage=False)
    report = clean_to_folder(tmp_path, [handmade["train"]], [handmade["valid"]], config=config)
    # only the unreadable story and the two never-repaired mojibake stories go
    assert _removed(report["train"])["unreadable"] == 3
    assert report["train"]["stories_out"] == 18


def test_vocab_limit_keeps_only_stories_in_the_top_words(story_files, tmp_path):
    train, valid = story_files
    plain = clean_to_folder(tmp_path / "plain", train, [valid])
    limit = min(1500, plain["train"]["vocabulary_out"] - 3)
    report = clean_to_folder(tmp_path, train, [valid], config=CleanConfig(vocab_limit=limit))
    # the training stories kept are those of train.txt and of the dev split drawn from them
    kept = list(read_cleaned(tmp_path / "train.txt"))
    dev = list(read_cleaned(tmp_path / "dev.txt")) if (tmp_path / "dev.txt").is_file() else []
    rules = {r["rule"]: r for r in report["train"]["rules"]}
    removed = rules["vocab_limit"]["removed"]
    assert 0 < removed < rules["vocab_limit"]["in"] and len(kept) + len(dev) == rules["vocab_limit"]["out"]
    assert len(dev) == report["dev"]["stories"]
    assert report["train"]["vocabulary_out"] <= limit
    assert "outside:" in rules["vocab_limit"]["examples"][0]
    # validation stories are held to the training vocabulary too
    assert report["valid"]["vocabulary_out"] <= limit


def test_held_out_share_without_valid(story_files, tmp_path):
    train_files, _ = story_files
    report = clean_to_folder(tmp_path, train_files, None, valid_share=0.1)
    assert report["held_out"]["share"] == 0.1
    n_valid, n_train = report["valid"]["stories_out"], report["train"]["stories_out"]
    assert 0.06 < n_valid / (n_valid + n_train) < 0.14
    assert not set(read_cleaned(tmp_path / "valid.txt")) & set(read_cleaned(tmp_path / "train.txt"))


def test_single_fixes():
    assert fix_encoding("itâ€™s a â€œbigâ€ day") == "it’s a “big” day"
    assert normalize_quotes("“Hi,” she said. It’s fun…") == '"Hi," she said. It\'s fun...'
    assert normalize_whitespace("  A  b\t c \r\n\n\n\nD  ") == "A b c\n\nD"
    assert is_complete('He said, "Yes!"') and is_complete("The end.") and not is_complete("and then the")


def test_real_hf_export_mojibake_is_repaired():
    root = shared_data_dir()
    if root is None:
        pytest.skip("shared data absent")
    raw = root / "tinystories" / "train-sample-hf-export-newline-joined.txt"
    cleaner = Cleaner(CleanConfig(min_words=0, drop_incomplete=False))
    stories = list(read_stories([raw], split_on="lines"))[:400]
    damaged = sum("â€" in s for s in stories)
    kept = list(cleaner.clean(stories, "train"))
    report = cleaner.report("train").to_dict()
    assert damaged > 10 and report["changed"]["encoding"]["stories"] >= damaged
    assert not any("â€" in s for s in kept)
    assert len(kept) >= len(stories) - 5


def test_bad_settings_are_one_sentence(tmp_path, story_files):
    with pytest.raises(NslmError, match="--near-dup-threshold"):
        CleanConfig(near_threshold=1.5).validate()
    with pytest.raises(NslmError, match="no training files"):
        clean_to_folder(tmp_path, None, None)
    with pytest.raises(NslmError, match="no train stories are left"):
        clean_to_folder(tmp_path, story_files[0], [story_files[1]], config=CleanConfig(min_words=5000, max_words=0))
