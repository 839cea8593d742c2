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

from nslm.errors import NslmError
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
