"""Where the public evaluation sets are looked for, and what to tell a user whose machine lacks them.

A set is found at the path given on the command line, else under `$NSLM_SHARED_DATA`, else in a
`shared/data` folder beside the checkout (`nslm.sample_data.shared_data_dir`). `missing_data_hint(name)`
is the one sentence that the CLI, the report and the GUI show when none of these holds it. A set with a
`bundled` stand-in (the evaluation prompts) falls back to that file, shipped with nslm, instead of stopping.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from nslm.errors import NslmError, parse_json, what_is_there
from nslm.sample_data import shared_data_dir


@dataclass(frozen=True)
class EvalDataset:
    """One public evaluation set: its flag, its place in the shared folder and where to download it."""

    title: str
    flag: str
    metavar: str
    shared: tuple[str, ...]
    download: str
    bundled: str | None = None  # a file beside this module used when the set is not found, or None


DATASETS = {
    "blimp": EvalDataset("BLiMP", "--blimp", "DIR", ("blimp",),
                         "the 67 data/*.jsonl files of https://github.com/alexwarstadt/blimp (CC BY)"),
    "cola": EvalDataset("CoLA", "--cola", "DIR", ("cola",),
                        "raw/in_domain_train.tsv, raw/in_domain_dev.tsv and raw/out_of_domain_dev.tsv of "
                        "cola_public_1.1.zip from https://nyu-mll.github.io/CoLA/"),
    "hellaswag": EvalDataset("HellaSwag", "--hellaswag", "FILE", ("hellaswag", "hellaswag_val_full_llamacpp.jsonl"),
                             "data/hellaswag_val.jsonl of https://github.com/rowanz/hellaswag (MIT; the original "
                             "format is read as it is)"),
    "prompts": EvalDataset("TinyStories evaluation prompts", "--prompts", "FILE",
                           ("tinystories_eval_prompts", "Evaluation prompts.yaml"),
                           "'Evaluation prompts.yaml' of https://huggingface.co/datasets/roneneldan/TinyStories "
                           "(or any text file with one prompt per line)", bundled="story_openings.yaml"),
}


def _dataset(name: str) -> EvalDataset:
    if name not in DATASETS:
        raise KeyError(f"unknown evaluation set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def default_data_path(name: str) -> Path | None:
    """The set's file or folder under `$NSLM_SHARED_DATA` or the shared data folder, or None."""
    parts = _dataset(name).shared
    roots = [Path(os.environ["NSLM_SHARED_DATA"])] if os.environ.get("NSLM_SHARED_DATA") else []
    found = shared_data_dir()
    if found is not None:
        roots.append(found)
    for root in roots:
        if root.joinpath(*parts).exists():
            return root.joinpath(*parts)
    return None


def bundled_data_path(name: str) -> Path | None:
    """The stand-in shipped with nslm for the set `name`, or None when it has none."""
    bundled = _dataset(name).bundled
    return Path(__file__).with_name(bundled) if bundled else None


def missing_data_hint(name: str) -> str:
    """One sentence for a user without the set `name` ("blimp", "cola", "hellaswag", "prompts"): what to get, where to put it."""
    d = _dataset(name)
    where = "/".join(d.shared)
    return (f"the {d.title} data was not found: download {d.download}, then give it with {d.flag} {d.metavar}, "
            f"or set NSLM_SHARED_DATA to a folder that holds {where}.")


def find_data(name: str, given: str | Path | None = None) -> Path:
    """The path given (which must exist) or the default one; NslmError with `missing_data_hint` otherwise."""
    d = _dataset(name)
    if given:
        if not Path(given).exists():
            raise NslmError(f"{d.title} path {given} does not exist; {missing_data_hint(name)}")
        return Path(given)
    found = default_data_path(name)
    if found is None:
        raise NslmError(missing_data_hint(name))
    return found


def read_text(path: Path, what: str) -> str:
    """The text of a user-given evaluation file; one sentence naming the file when it is not UTF-8 text."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise NslmError(f"{what} file {path} is not UTF-8 text (a byte at offset {exc.start} is not); "
                        "give the text file itself.") from exc


# One line of an evaluation file is a sentence, a story or a HellaSwag item: far below this. A longer one
# (a file without line breaks, binary data) is refused rather than held in memory.
MAX_LINE_BYTES = 16 << 20


def check_file(path: Path, what: str, hint: str) -> Path:
    """`path` when it is a file; NslmError saying what is there instead (nothing, a folder, a device)."""
    if not path.is_file():
        raise NslmError(f"{what} file {path} {what_is_there(path)}; {hint}")
    return path


def read_lines(path: Path, what: str) -> Iterator[tuple[int, str]]:
    """(line number, text without its line break) of each non-blank line of a user-given evaluation file,
    read one line at a time; NslmError naming the file and line when a line is not UTF-8 or far too long."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise NslmError(f"cannot read {what} file {path}: {exc.strerror or exc}") from exc
    with f:
        number = 0
        while raw := f.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(raw) > MAX_LINE_BYTES:
                raise NslmError(f"{what} file {path} line {number} is longer than {MAX_LINE_BYTES >> 20} MB; "
                                "give the text file itself.")
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a byte-order mark is not part of the text
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise NslmError(f"{what} file {path} line {number} is not UTF-8 text (byte {exc.start + 1} of the "
                                "line is not); give the text file itself.") from None
            line = line.rstrip("\r\n")
            if line.strip():
                yield number, line


def read_jsonl(path: Path, what: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line of a JSONL evaluation file; NslmError naming the file
    and line for a line that is not UTF-8, not JSON, nested too deeply, or not a JSON object."""
    for number, line in read_lines(path, what):
        record = parse_json(line, f"{what} file {path} line {number}")
        if not isinstance(record, dict):
            raise NslmError(f"{what} file {path} line {number} is not a JSON object "
                            f"(it is {json_kind(record)}).")
        yield number, record


def json_kind(value) -> str:
    """What a JSON value is, in words, for a message: 'a number', 'null', 'a list', ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    return "an object"


def text_field(record: dict, field: str, path: Path, number: int, what: str, default: str | None = None) -> str:
    """`record[field]` when it is text (or `default` when the field is absent and a default is given);
    NslmError naming the file, line and field otherwise."""
    if field not in record and default is not None:
        return default
    if field not in record:
        raise NslmError(f"{what} file {path} line {number} has no '{field}' field.")
    value = record[field]
    if not isinstance(value, str):
        raise NslmError(f"{what} file {path} line {number}: {field} must be text, not {json_kind(value)}.")
    return value
