"""Bad evaluation inputs (story JSONL, BLiMP, CoLA, HellaSwag, grader options) are one sentence naming the
file and line, never a traceback, a silently wrong figure or a half-written report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nslm.cli import main
from nslm.errors import NslmError
from nslm.eval import genset, grammar, hellaswag, report

SHIPPED = "tinystories-transformer-1m"
GOOD_STORY = {"prompt": "Once upon a time", "completion": " there was a cat."}


def _lines(path: Path, *lines: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


def _refused(capsys, argv: list[str], *words: str) -> str:
    """Run the CLI: exit 2, one `error:` line on stderr that holds every word, no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------- F4: generated stories (JSONL)
GOOD_LINE = json.dumps(GOOD_STORY)


@pytest.mark.parametrize("lines, where", [
    ([GOOD_LINE, '{"prompt": "Once", "completion": 5}'], "line 2: completion must be text"),
    (['{"prompt": "Once", "completion": null}'], "line 1: completion must be text"),
    (['{"prompt": 3, "completion": "x"}'], "line 1: prompt must be text"),
    (['{"completion": "x", "text": ["a"]}'], "line 1: text must be text"),
    ([GOOD_LINE, b"\xff\xfe"], "line 2 is not UTF-8"),
    ([bytes(range(128, 256)) * 4], "line 1 is not UTF-8"),
    (["[" * 100_000], "line 1 is not usable JSON (nested too deeply)"),
    ([GOOD_LINE, "", '"just text"'], "line 3 is not a JSON object"),
    ([GOOD_LINE, "{not json"], "line 2 is not valid JSON"),
])
def test_bad_story_lines_name_the_file_and_line(tmp_path, lines, where):
    path = _lines(tmp_path / "stories.jsonl", *lines)
    with pytest.raises(NslmError, match="stories.jsonl") as info:
        genset.load_jsonl(path)
    assert where in str(info.value)


def test_story_file_without_stories_or_that_is_a_folder_is_one_sentence(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(NslmError, match="empty.jsonl holds no stories"):
        genset.load_jsonl(tmp_path / "empty.jsonl")
    (tmp_path / "folder.jsonl").mkdir()
    with pytest.raises(NslmError, match="is a folder"):
        genset.load_jsonl(tmp_path / "folder.jsonl")


def test_good_stories_still_load_with_a_byte_order_mark(tmp_path):
    path = _lines(tmp_path / "s.jsonl", b"\xef\xbb\xbf" + GOOD_LINE.encode(), "", json.dumps({"completion": "Hi."}))
    first, second = genset.load_jsonl(path)
    assert first["text"] == GOOD_STORY["prompt"] + GOOD_STORY["completion"]
    assert second["prompt"] == "" and second["text"] == "Hi."


def test_judge_command_refuses_a_bad_story_file(tmp_path, capsys):
    path = _lines(tmp_path / "s.jsonl", GOOD_LINE, '{"prompt": "Once", "completion": 5}')
    _refused(capsys, ["eval", "judge", "--stories", str(path), "--judge-url", "http://127.0.0.1:9"],
             "s.jsonl line 2", "completion")


# ---------------------------------------------------------------- F6: BLiMP
def _blimp(tmp_path, *lines) -> Path:
    _lines(tmp_path / "blimp" / "a.jsonl", *lines)
    return tmp_path / "blimp"


GOOD_PAIR = json.dumps({"sentence_good": "The cat sleeps.", "sentence_bad": "The cat sleep.", "UID": "agr"})


@pytest.mark.parametrize("line, where", [
    ('{"sentence_good": 5, "sentence_bad": "x"}', "line 2: sentence_good must be text"),
    ('{"sentence_good": null, "sentence_bad": "x"}', "line 2: sentence_good must be text"),
    ('{"sentence_good": "x", "sentence_bad": ["x"]}', "line 2: sentence_bad must be text"),
    ('{"sentence_good": "x", "sentence_bad": "y", "UID": [1]}', "line 2: UID must be text"),
    ('["x", "y"]', "line 2 is not a JSON object"),
    ('{"sentence_good": "x"}', "line 2 lacks sentence_good/sentence_bad"),
    (b"\xff\xfe", "line 2 is not UTF-8"),
])
def test_bad_blimp_lines_name_the_file_and_line(tmp_path, line, where):
    with pytest.raises(NslmError, match="a.jsonl") as info:
        grammar.load_blimp(_blimp(tmp_path, GOOD_PAIR, line))
    assert where in str(info.value)


def test_empty_blimp_file_holds_no_pairs(tmp_path):
    folder = tmp_path / "blimp"
    folder.mkdir()
    (folder / "a.jsonl").write_text("")
    with pytest.raises(NslmError, match="a.jsonl holds no pairs"):
        grammar.load_blimp(folder)


def test_blimp_rows_count_pairs_and_line_numbers_count_lines(tmp_path):
    folder = _blimp(tmp_path, GOOD_PAIR, "", GOOD_PAIR, '{"sentence_good": 1, "sentence_bad": "x"}')
    with pytest.raises(NslmError, match="line 4:"):
        grammar.load_blimp(folder)
    folder = _blimp(tmp_path, GOOD_PAIR, "", GOOD_PAIR)
    assert [p["row"] for p in grammar.load_blimp(folder)] == [0, 1]


# ---------------------------------------------------------------- F5: CoLA
@pytest.mark.parametrize("row, where", [
    ("x\tyes\t\tThe cat sat.", "line 2: the label (column 2) must be 0 or 1"),
    ("x\t7\t\tThe cat sat.", "line 2: the label (column 2) must be 0 or 1"),
    ("x\t-1\t\tThe cat sat.", "line 2: the label (column 2) must be 0 or 1"),
    (b"\xff\xfe\x00\x01", "line 2 is not UTF-8"),
    ("x\t1\tThe cat sat.", "line 2 does not have 4 tab-separated columns"),
])
def test_bad_cola_rows_name_the_file_and_line(tmp_path, row, where):
    path = _lines(tmp_path / "in_domain_train.tsv", "x\t1\t\tThe cat sat.", row)
    with pytest.raises(NslmError, match="in_domain_train.tsv") as info:
        grammar.read_cola(path)
    assert where in str(info.value)


class _FlatModel(torch.nn.Module):
    """Zero features for every token: enough for the CoLA probe to run."""

    def features(self, idx):
        return torch.zeros(*idx.shape, 4)


class _ByteTokenizer:
    eot_id = 256

    def encode(self, text):
        return list(text.encode("utf-8"))


class _StoryModel:
    model, tokenizer, context_length, device = _FlatModel(), _ByteTokenizer(), 64, "cpu"


@pytest.mark.parametrize("empty", ["in_domain_train.tsv", "in_domain_dev.tsv"])
def test_empty_cola_file_holds_no_rows(tmp_path, empty):
    for name in ("in_domain_train.tsv", "in_domain_dev.tsv"):
        _lines(tmp_path / name, "x\t1\t\tThe cat sat.", "x\t0\t\tCat the sat.")
    (tmp_path / empty).write_text("\n")
    with pytest.raises(NslmError, match=f"{empty} holds no rows"):
        grammar.evaluate_cola(_StoryModel(), tmp_path)


def test_cola_folder_in_place_of_a_file_is_not_called_missing(tmp_path):
    (tmp_path / "in_domain_train.tsv").mkdir()
    with pytest.raises(NslmError, match="is a folder, not a file"):
        grammar.read_cola(tmp_path / "in_domain_train.tsv")


# ---------------------------------------------------------------- F7: HellaSwag
def _item(**fields) -> str:
    rec = {"ctx": "A man sits.", "endings": ["He stands.", "He eats.", "No.", "He is."], "label": 1}
    rec.update(fields)
    return json.dumps({k: v for k, v in rec.items() if v is not ...})


@pytest.mark.parametrize("line, where", [
    (_item(ctx=5, endings=[1, 2, 3, 4], label=0), "line 2: ctx must be text"),
    (_item(label=7), "line 2: label must be the number of the right ending, 0 to 3, not 7"),
    (_item(label=-1), "line 2: label must be the number of the right ending, 0 to 3, not -1"),
    (_item(label=True), "line 2: label must be"),
    (_item(label="two"), "line 2: label must be"),
    (_item(endings="abcd"), "line 2: endings must be a list of 4 texts"),
    (_item(endings=["a", "b", "c", None]), "line 2: endings must be a list of 4 texts"),
    (_item(endings=["a", "b", "c"]), "line 2 has 3 endings instead of 4"),
    (_item(label=...), "line 2 lacks label"),
    (_item(val_index="x"), "line 2: val_index must be a whole number"),
    (_item(ctx=..., ctx_a="A man", ctx_b=None), "line 2: ctx_b must be text"),
    ("[" * 100_000, "line 2 is not usable JSON"),
    (b"\xff\xfe", "line 2 is not UTF-8"),
])
def test_bad_hellaswag_lines_name_the_file_and_line(tmp_path, line, where):
    path = _lines(tmp_path / "hs.jsonl", _item(), line)
    with pytest.raises(NslmError, match="hs.jsonl") as info:
        hellaswag.load_hellaswag(path)
    assert where in str(info.value)


def test_hellaswag_labels_given_as_digits_still_load(tmp_path):
    path = _lines(tmp_path / "hs.jsonl", _item(label="3", val_index=4000), _item(label=0))
    first, second = hellaswag.load_hellaswag(path)
    assert (first["label"], first["source"], second["label"]) == (3, "wikihow", 0)


# ---------------------------------------------------------------- F19: grader options, eval all with nothing to do
@pytest.mark.parametrize("option, words", [
    (["--judge-url", "notaurl"], ["--judge-url", "notaurl"]),
    (["--judge-url", "file:///etc/passwd"], ["--judge-url", "file:///etc/passwd"]),
    (["--judge-url", "http://"], ["--judge-url"]),
    (["--judge-timeout", "nan"], ["--judge-timeout", "nan"]),
    (["--judge-timeout", "-1"], ["--judge-timeout"]),
    (["--judge-timeout", "0"], ["--judge-timeout"]),
    (["--judge-timeout", "inf"], ["--judge-timeout"]),
    (["--judge-retries", "-1"], ["--judge-retries", "-1"]),
    (["--judge-retries", "50"], ["--judge-retries", "from 0 to 10"]),
])
def test_judge_refuses_bad_grader_options_up_front(tmp_path, capsys, option, words):
    stories = _lines(tmp_path / "s.jsonl", GOOD_LINE)
    argv = ["eval", "judge", "--stories", str(stories), "--judge-url", "http://127.0.0.1:9", "--judge-retries", "0"]
    _refused(capsys, argv + option, *words)


@pytest.mark.parametrize("option, words", [
    (["--judge-url", "notaurl"], ["--judge-url"]),
    (["--judge-timeout", "nan"], ["--judge-timeout"]),
    (["--judge-retries", "-1"], ["--judge-retries"]),
])
def test_eval_all_refuses_bad_grader_options_before_writing(tmp_path, capsys, option, words):
    out = tmp_path / "report"
    _refused(capsys, ["eval", "all", "--model", SHIPPED, "--out", str(out), *option], *words)
    assert not out.exists()


def test_eval_all_with_every_step_skipped_writes_nothing(tmp_path, capsys):
    out = tmp_path / "report"
    skips = [a for step in report.STEP_NAMES for a in ("--skip", step)]
    _refused(capsys, ["eval", "all", "--model", SHIPPED, "--out", str(out), *skips], "every step is skipped")
    assert not out.exists()


def test_eval_all_with_only_steps_that_need_generate_writes_nothing(tmp_path, capsys):
    out = tmp_path / "report"
    skips = [a for step in report.STEP_NAMES if step not in ("novelty", "judge") for a in ("--skip", step)]
    _refused(capsys, ["eval", "all", "--model", SHIPPED, "--out", str(out), *skips,
                      "--judge-url", "http://127.0.0.1:9"], "generate")
    assert not out.exists()
