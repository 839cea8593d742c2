"""The whole data pipeline: read -> clean -> train a tokenizer -> token files, into one data folder.

The folder is built under a temporary name and renamed at the end, so an error leaves nothing behind.
`meta.json` records a fingerprint of the inputs and settings, which lets `--if-exists reuse` return at
once when the folder already holds the same dataset.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from nslm.atomic import atomic_dir, atomic_write_json, writing_in
from nslm.data.cleaning import RULE_ADVICE, Cleaner, CleanConfig, SplitReport, finish_vocabulary, vocab_filter
from nslm.data.reading import HUB_DATASET, expand_inputs, guess_encoding, read_file, read_hub, read_stories
from nslm.data.tokens import DEV, SPLITS, DataFolder, build_meta, write_meta, write_tokens
from nslm.errors import NslmError
from nslm.tokenizer import Tokenizer, train_tokenizer
from nslm.tokenizer.core import check_kind_and_size
from nslm.tokenizer.detok import EOT

IF_EXISTS = ("error", "reuse", "overwrite")
SOURCES = ("files", "hf")
DEFAULT_VALID_SHARE = 0.02
# Share of the cleaned training stories set aside as the dev split (checkpoint and recipe selection), so that
# the validation split is only ever reported. 0 makes a folder without one, as before dev splits existed.
DEFAULT_DEV_SHARE = 0.02
DATA_FILES = ("train.txt", "valid.txt", "report.json", "tokenizer.json", "train.bin", "valid.bin", "meta.json")


class NothingLeftError(NslmError):
    """Cleaning left a split empty; `report` is the cleaning report, so the CLI can show its table."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


@dataclass
class PrepareResult:
    """What `prepare` made (or found): the folder, its cleaning report and token header."""

    path: Path
    report: dict
    meta: dict
    reused: bool = False


def write_stories(stories: Iterable[str], path: Path) -> int:
    """Write stories in the published layout (each followed by a line `<|endoftext|>`); returns the count."""
    count = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for story in stories:
            f.write(story)
            f.write(f"\n{EOT}\n")
            count += 1
    return count


def read_cleaned(path: str | Path) -> Iterator[str]:
    """Stories of a cleaned `train.txt` / `valid.txt` (an empty file yields nothing)."""
    path = Path(path)
    if not path.is_file():
        raise NslmError(f"{path} does not exist; make it with nslm data clean")
    if path.stat().st_size == 0:
        return
    yield from read_file(path, "eot")


def _limited(stories: Iterable[str], limit: int | None) -> Iterator[str]:
    for i, story in enumerate(stories):
        if limit is not None and i >= limit:
            return
        yield story


def _bucket(text: str, salt: str = "") -> float:
    """A fixed pseudo-random number in [0, 1) for a story, so the held-out and dev shares are reproducible.
    A different `salt` gives an independent number, so the dev pick does not depend on the held-out pick."""
    data = (salt + text).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") / 2**64


def is_kept_story(text: str, train_share: float) -> bool:
    """Whether a cleaned training story (not in dev) stays in a `train_share` subset: another hash decides, so
    the subset of a smaller share lies inside the subset of a larger one (nested data-size studies)."""
    return train_share >= 1.0 or _bucket(text, salt="keep\0") < train_share


def is_dev_story(text: str, dev_share: float) -> bool:
    """Whether a cleaned training story belongs to the dev split (a hash of its text decides)."""
    return dev_share > 0 and _bucket(text, salt="dev\0") < dev_share


def clean_to_folder(folder: str | Path, train: Sequence[str] | None, valid: Sequence[str] | None = None, *,
                    config: CleanConfig | None = None, valid_share: float = DEFAULT_VALID_SHARE,
                    dev_share: float = DEFAULT_DEV_SHARE, split_on: str = "eot", source: str = "files",
                    max_stories: int | None = None, train_share: float = 1.0, progress: bool = False) -> dict:
    """Clean the inputs into `folder`/train.txt, dev.txt and valid.txt; return the cleaning report (a dict).

    Validation stories come from `valid` (files) and are cleaned first, so training stories that repeat
    them are dropped as leakage. Without `valid`, a `valid_share` of the input stories (chosen by a hash
    of their text) is held out instead. A `dev_share` of the cleaned training stories (another hash) goes
    to dev.txt; the report's `train` counts include them and `dev` says how many there are. With
    `dev_share` 0, or when the pick leaves dev empty, no dev.txt is written. A `train_share` below 1 keeps
    only that share of the other training stories (a third hash picks them; dev stays as it is), for studies
    of how much data a model needs; the report's `subset` says how many were left out.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = (config or CleanConfig()).validate()
    if source not in SOURCES:
        raise NslmError(f"unknown --source {source!r}; choose one of {', '.join(SOURCES)}")
    if source == "files" and not train:
        raise NslmError("no training files given; pass --train FILE... or --source hf to download TinyStories")
    if not 0.0 < valid_share < 0.5:
        raise NslmError(f"--valid-share must lie between 0 and 0.5, not {valid_share}")
    if not 0.0 <= dev_share < 0.5:
        raise NslmError(f"--dev-share must lie between 0 (no dev split) and 0.5, not {dev_share}")
    check_train_share(train_share)
    # fail on missing paths before any work starts
    if train:
        expand_inputs(train)
    if valid:
        expand_inputs(valid)

    def stream(paths, split):
        def oversized(note):
            cleaner.drop_oversized(note, split if valid_stream_given else "train")

        if paths:
            raw = read_stories(paths, split_on, oversized)
        elif source == "hf" and not train:
            raw = read_hub(split, on_oversized=oversized)
        else:
            return None
        return _progress(_limited(raw, max_stories), f"cleaning {split}", progress)

    cleaner = Cleaner(config)
    valid_stream_given = bool(valid) or (source == "hf" and not train)
    train_raw = folder / ".train.unfiltered.txt"
    valid_raw = folder / ".valid.unfiltered.txt"
    held_out = None
    valid_stream = stream(valid, "valid")
    if valid_stream is not None:
        write_stories(cleaner.clean(valid_stream, "valid"), valid_raw)
        write_stories(cleaner.clean(stream(train, "train"), "train"), train_raw)
    else:
        held_out = {"share": valid_share, "method": "a hash of each input story's text picks it"}
        with ExitStack() as stack:
            files = {s: stack.enter_context(open(p, "w", encoding="utf-8", newline="\n"))
                     for s, p in (("train", train_raw), ("valid", valid_raw))}
            for story in stream(train, "train"):
                split = "valid" if _bucket(story) < valid_share else "train"
                kept = cleaner.clean_one(story, split)
                if kept is not None:
                    files[split].write(f"{kept}\n{EOT}\n")
    reports = {s: cleaner.report(s) for s in SPLITS}
    if reports["train"].stories_in == 0:
        raise NslmError("the training input holds no stories")
    allowed = None
    if config.vocab_limit:
        allowed = {w for w, _ in reports["train"].vocabulary.most_common(config.vocab_limit)}
    dev_count, left_out = 0, 0
    for split, raw_path in (("train", train_raw), ("valid", valid_raw)):
        stories = read_cleaned(raw_path)
        if allowed is not None:
            stories = vocab_filter(stories, allowed, reports[split])
        if split == "train":
            dev_count, left_out = _write_train_and_dev(stories, folder, dev_share, train_share)
        else:
            write_stories(stories, folder / f"{split}.txt")
        raw_path.unlink()
        finish_vocabulary(reports[split])
    dev = {"share": dev_share, "stories": dev_count,
           "method": "a hash of each cleaned training story's text picks it; checkpoints and recipes are "
                     "selected on it, the validation split is only reported"}
    report = {"settings": config.to_dict(), "held_out": held_out, "dev": dev,
              "subset": {"train_share": train_share, "left_out": left_out,
                         "method": "a hash of each cleaned training story's text keeps it (dev is kept whole)"},
              "inputs": {"train": [str(p) for p in train or []] or None,
                         "valid": [str(p) for p in valid or []] or None,
                         "source": source if not train else "files"}}
    report.update({s: reports[s].to_dict() for s in SPLITS})
    for split in SPLITS:
        if reports[split].stories_out == 0:
            inputs = (valid if split == "valid" and valid else train) or []
            raise NothingLeftError(_nothing_left(split, reports[split], expand_inputs(inputs)), report)
    atomic_write_json(folder / "report.json", report)
    return report


def check_train_share(train_share) -> None:
    if not (isinstance(train_share, (int, float)) and 0.0 < train_share <= 1.0):
        raise NslmError(f"--train-share must lie above 0 and at most 1 (all stories), not {train_share}")


def _write_train_and_dev(stories: Iterable[str], folder: Path, dev_share: float,
                         train_share: float = 1.0) -> tuple[int, int]:
    """Write the cleaned training stories to train.txt, or to dev.txt where the hash picks them, leaving out the
    stories outside a `train_share` subset; returns the dev count (an empty dev.txt is removed: the folder then
    has no dev split) and how many were left out."""
    dev_path = folder / f"{DEV}.txt"
    counts = {"train": 0, DEV: 0, "left_out": 0}
    with open(folder / "train.txt", "w", encoding="utf-8", newline="\n") as train, \
            open(dev_path, "w", encoding="utf-8", newline="\n") as dev:
        for story in stories:
            split = DEV if is_dev_story(story, dev_share) else "train" if is_kept_story(story, train_share) else "left_out"
            if split != "left_out":
                (dev if split == DEV else train).write(f"{story}\n{EOT}\n")
            counts[split] += 1
    if counts[DEV] == 0:
        dev_path.unlink()
    if counts["train"] == 0:
        if counts["left_out"]:
            raise NslmError(f"--train-share {train_share} keeps none of the {counts['left_out']:,} training stories; "
                            "raise it or give more stories")
        if counts[DEV]:
            raise NslmError(f"the dev split took all {counts[DEV]} training stories; lower --dev-share or give more stories")
    return counts[DEV], counts["left_out"]


def _nothing_left(split: str, rep: SplitReport, inputs: list[Path]) -> str:
    """One sentence: how many stories each rule removed, and what to change for the biggest one."""
    removed = sorted(((n, rule) for rule, n in rep.removed.items() if n), reverse=True)
    counts = ", ".join(f"{n:,} {rule.replace('_', ' ')}" for n, rule in removed)
    message = f"no {split} stories are left after cleaning (of {rep.stories_in:,}: {counts or 'none removed'})"
    if not removed:
        return message
    top = removed[0][1]
    advice = RULE_ADVICE[top]
    if top == "unreadable":
        found = next(((p, enc) for p in inputs if (enc := guess_encoding(p))), None)
        if found:
            path, encoding = found
            advice += (f" (charset-normalizer's guess for {path}: {encoding}); convert it, e.g. "
                       f"iconv -f {encoding} -t utf-8 {path} > {path.stem}-utf8{path.suffix}")
        else:
            advice += "; convert it to UTF-8"
    return f"{message}; most were {top.replace('_', ' ')}: {advice}"


def _progress(stories: Iterable[str], desc: str, enabled: bool) -> Iterable[str]:
    if not enabled:
        yield from stories
        return
    from tqdm import tqdm

    # closed (and wiped) before an error from reading reaches the user, so the error stands alone
    with tqdm(desc=desc, unit=" stories", leave=False) as bar:
        for story in stories:
            bar.update()
            yield story


def tokenize_folder(folder: str | Path, tokenizer=None, *, extra_meta: dict | None = None,
                    progress: bool = False, save_tokenizer: bool = False) -> dict:
    """Write train.bin, valid.bin (and dev.bin where `folder` has a dev.txt) and meta.json for the cleaned
    stories in `folder` (and, with `save_tokenizer`, the tokenizer's files beside them); returns the meta.

    Every input is checked before anything is written (each story file present and holding stories), and
    the files are made in a temporary folder inside `folder` and moved into place only once all are written
    (meta.json last, an older one removed first), so an error leaves `folder` as it was."""
    folder = Path(folder)
    if tokenizer is None:
        tokenizer = Tokenizer.load(folder / "tokenizer.json")
    present = [s for s in (*SPLITS, DEV) if s in SPLITS or (folder / f"{s}.txt").is_file()]
    for split in present:
        path = folder / f"{split}.txt"
        if next(iter(read_cleaned(path)), None) is None:
            advice = ("remove it (the folder then has no dev split) or" if split == DEV
                      else "make the folder again with nslm data clean, or")
            raise NslmError(f"{path} holds no stories; {advice} give it stories before tokenizing")
    with writing_in(folder):
        tmp = Path(tempfile.mkdtemp(prefix=".tokenize.", suffix=".tmp", dir=folder))
        try:
            if save_tokenizer:  # the header's hash must name the tokenizer.json that sits beside the ids
                tokenizer.save(tmp)
            splits = {split: write_tokens(tokenizer, read_cleaned(folder / f"{split}.txt"), tmp / f"{split}.bin",
                                          progress=progress)
                      for split in present}
            for split, info in splits.items():
                if split != "train" and info["tokens"] < 2:  # an evaluation window needs 2 tokens
                    raise NslmError(f"{folder / (split + '.txt')} encodes to {info['tokens']} token(s), fewer than the "
                                    "2 an evaluation needs; give it more stories")
            meta = build_meta(tokenizer, splits, extra_meta)
            write_meta(tmp, meta)
            (folder / "meta.json").unlink(missing_ok=True)  # never a header beside token files it does not describe
            for made in sorted(tmp.iterdir(), key=lambda f: f.name == "meta.json"):
                os.replace(made, folder / made.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return meta


def fingerprint(train, valid, settings: dict) -> str:
    """sha256 over the input files (path, size, modification time) and every setting."""
    def describe(paths):
        if not paths:
            return None
        return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in expand_inputs(paths)]

    blob = json.dumps({"train": describe(train), "valid": describe(valid), "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _is_complete(folder: DataFolder) -> bool:
    names = list(DATA_FILES) + (["casing.json"] if folder.meta["tokenizer_kind"] == "word" else [])
    names += [f"{DEV}.txt", f"{DEV}.bin"] if folder.has_dev else []
    return all((folder.path / n).is_file() for n in names) and folder.tokenizer_file_matches()


def _existing_dataset(out: Path) -> tuple[str, DataFolder | None]:
    """('absent' | 'empty' | 'data' | 'foreign', the data folder) for the output path."""
    if not out.exists():
        return "absent", None
    if not out.is_dir():
        raise NslmError(f"output {out} is a file, not a folder; choose another --out")
    if not any(out.iterdir()):
        return "empty", None
    try:
        return "data", DataFolder(out)
    except NslmError:
        return "foreign", None


def prepare(train: Sequence[str] | None, valid: Sequence[str] | None, out: str | Path, *,
            tokenizer_kind: str = "bpe", vocab_size: int | None = None, config: CleanConfig | None = None,
            valid_share: float = DEFAULT_VALID_SHARE, dev_share: float = DEFAULT_DEV_SHARE,
            split_on: str = "eot", source: str = "files", tokenizer_sample: int | None = None,
            max_stories: int | None = None, train_share: float = 1.0, if_exists: str = "error",
            progress: bool = False) -> PrepareResult:
    """Make the data folder `out` (train/valid.txt, report.json, tokenizer.json, train/valid.bin, meta.json,
    and dev.txt / dev.bin where a dev split is carved, `dev_share` above 0).

    `if_exists`: `error` refuses an existing non-empty folder, `reuse` returns at once when `out` already
    holds a complete dataset made from the same inputs and settings (and errors otherwise), `overwrite`
    replaces an earlier data folder (never a foreign one). A folder made before dev splits existed, from
    the same inputs and other settings, is reused as it is (without a dev split) rather than refused.
    """
    out = Path(out)
    config = (config or CleanConfig()).validate()
    if if_exists not in IF_EXISTS:
        raise NslmError(f"unknown --if-exists {if_exists!r}; choose one of {', '.join(IF_EXISTS)}")
    check_kind_and_size(tokenizer_kind, vocab_size)
    if tokenizer_sample is not None and tokenizer_sample < 1:
        raise NslmError(f"--tokenizer-sample must be a positive number of stories, not {tokenizer_sample}")
    settings = {"clean": config.to_dict(), "tokenizer": tokenizer_kind, "vocab_size": vocab_size,
                "valid_share": None if valid else valid_share, "split_on": split_on,
                "source": "files" if train else source, "tokenizer_sample": tokenizer_sample,
                "max_stories": max_stories}
    # dev_share joins the fingerprint only when set, so a folder made before dev splits has the same
    # fingerprint as a request for none; `reuse` also accepts such a folder for the default share
    older_settings = dict(settings)
    if dev_share:
        settings["dev_share"] = dev_share
    check_train_share(train_share)
    if train_share < 1.0:  # likewise: a folder of every story keeps its fingerprint
        settings["train_share"] = train_share
    if train:
        expand_inputs(train)
    if valid:
        expand_inputs(valid)
    fp = fingerprint(train, valid, settings)
    state, existing = _existing_dataset(out)
    made_with = existing.meta.get("prepare", {}).get("fingerprint") if state == "data" else None
    before_dev = made_with is not None and not existing.has_dev and made_with == fingerprint(train, valid, older_settings)
    same = state == "data" and (made_with == fp or before_dev) and _is_complete(existing)
    if state == "foreign":
        raise NslmError(f"output folder {out} is not empty and is not an nslm data folder; choose another --out")
    if state == "data":
        if if_exists == "reuse" and same:
            report = json.loads((out / "report.json").read_text(encoding="utf-8"))
            return PrepareResult(out, report, existing.meta, reused=True)
        if if_exists != "overwrite":
            what = "this dataset" if same else "a different dataset (other inputs or settings)"
            raise NslmError(f"output folder {out} already holds {what}; pass --if-exists overwrite to "
                            "replace it or choose another --out")
    with atomic_dir(out, replace=True) as tmp:
        report = clean_to_folder(tmp, train, valid, config=config, valid_share=valid_share, dev_share=dev_share,
                                 split_on=split_on, source=source, max_stories=max_stories, train_share=train_share,
                                 progress=progress)
        # the tokenizer learns from every cleaned training story, dev included: it selects nothing, and so a
        # folder prepared with a dev split keeps the tokenizer (and the models) of one prepared without
        parts = [read_cleaned(tmp / name) for name in ("train.txt", f"{DEV}.txt") if (tmp / name).is_file()]
        texts = _limited(itertools.chain(*parts), tokenizer_sample)
        tokenizer = train_tokenizer(tokenizer_kind, texts, vocab_size)
        tokenizer.save(tmp)
        tokenizer = Tokenizer.load(tmp / "tokenizer.json")
        extra = {"prepare": {"fingerprint": fp, "settings": settings}}
        meta = tokenize_folder(tmp, tokenizer, extra_meta=extra, progress=progress)
    return PrepareResult(out, report, meta)


__all__ = ["PrepareResult", "prepare", "clean_to_folder", "tokenize_folder", "write_stories", "read_cleaned",
           "fingerprint", "is_dev_story", "DEFAULT_VALID_SHARE", "DEFAULT_DEV_SHARE", "HUB_DATASET"]
