"""Reading and cleaning hostile files: memory bounded by a story's ceiling, not by what a file holds;
the same verdict on a bad story wherever it sits; and when nothing is left, a sentence saying why."""

import json
import re
import tracemalloc

import pytest

from nslm.cli import main
from nslm.data import read_stories
from nslm.data.cleaning import Cleaner, CleanConfig
from nslm.data.reading import MAX_STORY_CHARS, Oversized
from nslm.errors import NslmError
from nslm.tokenizer import EOT

WORDS = "the cat dog ran to a big red ball and the sun in the park made a happy little girl smile".split()


def _story(i: int, words: int = 60) -> str:
    body = " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(words))
    return f"Story {i} begins here. Tim {i} saw {body}. The end of story {i} came at last."


def _eot_file(path, stories):
    path.write_text("".join(f"{s}\n{EOT}\n" for s in stories), encoding="utf-8")
    return path


def _removed(split_report):
    return {r["rule"]: r["removed"] for r in split_report["rules"] if r["removed"]}


def test_a_huge_line_is_read_in_bounded_memory_and_reported(tmp_path):
    path = tmp_path / "oneline.txt"
    huge = "word " * 6_000_000  # 30 MB on one line
    path.write_text("\n".join(_story(i) for i in range(5)) + "\n" + huge + "\n" + _story(5) + "\n")
    notes: list[Oversized] = []
    tracemalloc.start()
    stories = list(read_stories([path], split_on="lines", on_oversized=notes.append))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert stories == [_story(i) for i in range(6)]
    assert len(notes) == 1 and notes[0].chars == len(huge) + 1 and notes[0].head.startswith("word word")
    assert notes[0].source == f"{path} line 6"
    # the ceiling plus one piece, never the 30 MB line (strings hold one byte per ASCII character)
    assert peak < 3 * MAX_STORY_CHARS


def test_cleaning_a_long_story_needs_a_small_multiple_of_its_size():
    size = 250_000  # a quarter of the ceiling keeps the test quick; the cost grows linearly
    story = ("The little dog ran to the park. " * (size // 32))[:size - 1] + "."
    cleaner = Cleaner(CleanConfig(max_words=0))
    tracemalloc.start()
    kept = cleaner.clean_one(story, "train")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert kept == story.strip()
    # MinHash hashes the shingles in batches: all at once would be about 200 times the story's size
    assert peak < 40 * size


def test_prepare_drops_and_counts_a_story_over_the_ceiling(tmp_path, capsys):
    path = tmp_path / "raw.txt"
    path.write_text("\n".join(_story(i) for i in range(40)) + "\n" + "big " * 400_000 + ".\n"
                    + "\n".join(_story(i) for i in range(40, 80)) + "\n")
    out = tmp_path / "ds"
    args = ["data", "prepare", "--train", str(path), "--split-on", "lines", "--max-words", "0", "--out", str(out),
            "--vocab-size", "300", "--no-near-dup"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["train"]["stories_in"] + report["valid"]["stories_in"] == 81
    assert _removed(report["train"]) == {"oversized": 1}
    example = report["train"]["rules"][0]["examples"][0]
    assert example.startswith("big big")
    assert re.search(r"\[1,600,00\d characters, over the 1,000,000 ceiling, at .*raw.txt line 41\]$", example), example
    assert "oversized" in printed  # the terminal table has the row too


def _nul_story(i: int) -> str:
    return _story(i).replace("saw", "saw \x00\x01\x02", 1)


@pytest.mark.parametrize("where", [0, 600])
def test_a_story_with_control_bytes_is_dropped_wherever_it_sits(tmp_path, where):
    stories = [_story(i) for i in range(800)]  # about 300 KB: the bad story at the start or after 200 KB
    stories.insert(where, _nul_story(9999))
    path = _eot_file(tmp_path / "mixed.txt", stories)
    assert len(list(read_stories([path]))) == 801
    out = tmp_path / "ds"
    assert main(["data", "clean", "--train", str(path), "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["train"]["rules"][1]["rule"] == "unreadable"
    assert report["train"]["rules"][1]["removed"] + report["valid"]["rules"][1]["removed"] == 1


def test_a_mostly_binary_file_is_refused_wherever_its_text_is(tmp_path):
    junk = bytes(range(256)) * 2000
    text = "".join(f"{_story(i)}\n{EOT}\n" for i in range(50)).encode()
    for name, content in (("text-first.txt", text + junk), ("junk-first.txt", junk + text)):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(NslmError, match="binary"):
            list(read_stories([tmp_path / name]))


def test_separators_are_found_anywhere_in_the_file(tmp_path):
    long_story = ("A long day went by. " * 14_000).strip()  # 280,000 characters
    stories = [long_story] + [_story(i) for i in range(220)]
    path = _eot_file(tmp_path / "long-first.txt", stories)
    read = list(read_stories([path]))
    assert len(read) == 221 and read[0] == long_story and read[1:] == stories[1:]


def test_a_separator_cut_between_two_pieces_still_separates(tmp_path):
    from nslm.data.reading import READ_CHUNK

    first = "x" * (READ_CHUNK - 5)  # the separator starts 5 characters before a piece ends
    path = tmp_path / "cut.txt"
    path.write_text(f"{first}{EOT}second story.\n{EOT}\n")
    assert list(read_stories([path])) == [first, "second story."]


def test_deeply_nested_jsonl_is_one_sentence(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text(json.dumps({"story": _story(1)}) + "\n" + "[" * 200_000 + "\n")
    with pytest.raises(NslmError, match=r"deep.jsonl line 2 is not usable JSON \(nested too deeply\)"):
        list(read_stories([path]))


def test_latin1_file_says_which_rule_and_which_encoding(tmp_path, capsys):
    path = tmp_path / "latin.txt"
    stories = [_story(i).replace("The end", "Caf\xe9 na\xefve. The end") for i in range(30)]
    path.write_bytes("".join(f"{s}\n{EOT}\n" for s in stories).encode("latin-1"))
    out = tmp_path / "ds"
    assert main(["data", "prepare", "--train", str(path), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    err = [line.rsplit("\r", 1)[-1] for line in captured.err.split("\n")]  # progress bars redraw with \r
    err = [line for line in err if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: no train stories are left after cleaning")
    assert "30 unreadable" in err[0] and "not UTF-8" in err[0] and "--min-words" not in err[0]
    assert f"charset-normalizer's guess for {path}: " in err[0] and "iconv -f " in err[0]
    assert "unreadable" in captured.out and "Cleaning train" in captured.out  # the table
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["latin.txt"]


def test_nothing_left_names_the_rule_that_removed_most(tmp_path, capsys):
    path = _eot_file(tmp_path / "short.txt", [f"Tom {i} ran." for i in range(40)])
    assert main(["data", "prepare", "--train", str(path), "--out", str(tmp_path / "ds"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"\(of (\d+): \1 too short\); most were too short: lower --min-words", err), err


def test_tokenizer_train_leaves_out_an_oversized_story_and_says_so(tmp_path, capsys):
    path = tmp_path / "raw.txt"
    path.write_text("\n".join(_story(i) for i in range(20)) + "\n" + "huge " * 300_000 + "\n")
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--input", str(path), "--split-on", "lines", "--kind", "char",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"left out a story over the 1,000,000-character ceiling, the first at {path} line 21" in err
    assert (out / "tokenizer.json").is_file()
