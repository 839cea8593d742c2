"""Read stories from TinyStories files in every published layout, one story at a time.

- text with a line `<|endoftext|>` after each story (TinyStories-train.txt / -valid.txt, V2 too);
- JSON (a list of objects or strings, or an object holding such a list) and JSONL with a `story`
  or `text` field;
- a folder or a glob of such files;
- the Hugging Face hub (`roneneldan/TinyStories`), see `read_hub`.
Text files are streamed line by line, so a 1.9 GB file is never held in memory.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Iterable, Iterator

from nslm.errors import NslmError
from nslm.tokenizer.detok import EOT

SPLIT_MODES = ("eot", "blank-lines", "lines")
TEXT_SUFFIXES = {".txt", ".text", ""}
JSON_SUFFIXES = {".json", ".jsonl", ".ndjson"}
# A text file must show a story separator within this many characters (or end first).
MAX_STORY_CHARS = 200_000
HUB_DATASET = "roneneldan/TinyStories"
HUB_FILES = {"train": "TinyStories-train.txt", "valid": "TinyStories-valid.txt"}


def expand_inputs(specs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files named by paths, folders (their story files, sorted) and globs; missing ones are an error."""
    files: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and _is_story_file(p))
            if not found:
                raise NslmError(f"folder {path} holds no .txt, .json or .jsonl files")
            files += found
        elif path.is_file():
            files.append(path)
        elif glob.has_magic(str(spec)):
            found = sorted(Path(p) for p in glob.glob(str(spec)) if Path(p).is_file())
            if not found:
                raise NslmError(f"the pattern {spec} matches no files")
            files += found
        else:
            raise NslmError(f"input file {path} does not exist")
    return files


def _is_story_file(path: Path) -> bool:
    return not path.name.startswith(".") and path.suffix.lower() in TEXT_SUFFIXES | JSON_SUFFIXES


def read_stories(paths: Iterable[str | os.PathLike], split_on: str = "eot") -> Iterator[str]:
    """Yield the raw text of every story in `paths` (files, folders, globs), in order.

    `split_on` says how plain text files separate stories: `eot` (a `<|endoftext|>` line, the
    published layout; a file without any is an error), `blank-lines` or `lines` (used only for files
    that hold no `<|endoftext|>`, so a mix of layouts can be read in one call).
    """
    if split_on not in SPLIT_MODES:
        raise NslmError(f"unknown --split-on {split_on!r}; choose one of {', '.join(SPLIT_MODES)}")
    for path in expand_inputs(paths):
        yield from read_file(path, split_on)


def read_file(path: Path, split_on: str = "eot") -> Iterator[str]:
    """Yield the stories of one file; raises NslmError for empty, binary or separator-less files."""
    _check_readable(path)
    if path.suffix.lower() in JSON_SUFFIXES:
        reader = _read_jsonl(path) if _looks_like_jsonl(path) else _read_json(path)
    else:
        if split_on != "eot" and _has_separator(path):
            split_on = "eot"  # --split-on is for files without separators; the published layout wins
        reader = _read_text(path, split_on)
    count = 0
    for story in reader:
        count += 1
        yield story
    if count == 0:
        raise NslmError(f"{path} holds no stories")


def _check_readable(path: Path) -> None:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8192)
    except OSError as exc:
        raise NslmError(f"cannot read {path}: {exc.strerror}") from exc
    if size == 0 or not head.strip():
        raise NslmError(f"{path} is empty")
    if b"\x00" in head or _binary_share(head) > 0.1:
        raise NslmError(f"{path} is not text (binary data); give TinyStories .txt, .json or .jsonl files")


def _has_separator(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as f:
        return EOT in f.read(MAX_STORY_CHARS)


def _binary_share(head: bytes) -> float:
    """Share of control bytes and invalid UTF-8 in the first bytes of a file."""
    text = head.decode("utf-8", errors="replace")
    bad = sum(1 for ch in text if ch == "\ufffd" or (ord(ch) < 32 and ch not in "\n\r\t\f"))
    # a multi-byte character cut at the end of `head` is not damage
    return max(0, bad - 3) / max(1, len(text))


def _read_text(path: Path, split_on: str) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="replace", newline=None) as f:
        if split_on == "lines":
            for line in f:
                if line.strip():
                    yield line.rstrip("\n")
            return
        buf: list[str] = []
        size = 0
        seen_separator = False
        for line in f:
            if split_on == "eot" and EOT in line:
                # the separator normally sits on its own line, but tolerate it inside one
                head, *rest = line.split(EOT)
                buf.append(head)
                for piece in rest:
                    story = "".join(buf).strip()
                    if story:
                        yield story
                    buf, size = [piece], len(piece)
                seen_separator = True
                continue
            if split_on == "blank-lines" and not line.strip():
                story = "".join(buf).strip()
                if story:
                    yield story
                buf, size = [], 0
                seen_separator = True
                continue
            buf.append(line)
            size += len(line)
            if size > MAX_STORY_CHARS and not seen_separator:
                raise _no_separator(path, split_on)
            if size > MAX_STORY_CHARS * 50:
                raise NslmError(f"{path} has a story of over {MAX_STORY_CHARS * 50:,} characters; "
                                "is it separated by <|endoftext|> lines?")
        story = "".join(buf).strip()
        if story and not seen_separator and split_on == "eot":
            raise _no_separator(path, split_on)
        if story:
            yield story


def _no_separator(path: Path, split_on: str) -> NslmError:
    if split_on == "eot":
        return NslmError(f"{path} has no {EOT} story separators; pass --split-on blank-lines or "
                         "--split-on lines if its stories are separated another way")
    return NslmError(f"{path} has no blank lines between stories; pass --split-on lines or use {EOT} lines")


def _looks_like_jsonl(path: Path) -> bool:
    if path.suffix.lower() in {".jsonl", ".ndjson"}:
        return True
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline().strip()
    if not first.startswith("{"):
        return False
    try:
        record = json.loads(first)
    except ValueError:
        return False
    return isinstance(record, dict) and ("story" in record or "text" in record)


def _story_of(record, path: Path, where: str) -> str:
    if isinstance(record, str):
        return record
    if isinstance(record, dict):
        for field in ("story", "text"):
            if isinstance(record.get(field), str):
                return record[field]
    raise NslmError(f"{path} {where} has no 'story' or 'text' field")


def _read_jsonl(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise NslmError(f"{path} line {number} is not valid JSON ({exc.msg})") from exc
            story = _story_of(record, path, f"line {number}").strip()
            if story:
                yield story


def _read_json(path: Path) -> Iterator[str]:
    # a single JSON document has to be parsed whole; the big TinyStories files are text or JSONL
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except ValueError as exc:
        raise NslmError(f"{path} is not valid JSON ({exc})") from exc
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if not lists:
            raise NslmError(f"{path} holds a JSON object without a list of stories")
        data = lists[0]
    if not isinstance(data, list):
        raise NslmError(f"{path} holds JSON that is not a list of stories")
    for i, record in enumerate(data):
        story = _story_of(record, path, f"item {i}").strip()
        if story:
            yield story


def read_hub(split: str, dataset: str = HUB_DATASET) -> Iterator[str]:
    """Stream the stories of `split` (`train` or `valid`) of TinyStories from the Hugging Face hub.

    Uses `datasets` (streaming) when it is installed, else downloads the published text file with
    `huggingface_hub` (cached in ~/.cache/huggingface) and reads it like a local file.
    """
    try:
        import datasets  # noqa: F401
    except ImportError:
        datasets = None
    try:
        if datasets is not None:
            hub_split = "validation" if split == "valid" else split
            stream = datasets.load_dataset(dataset, split=hub_split, streaming=True)
            for row in stream:
                story = (row.get("text") or row.get("story") or "").strip()
                if story:
                    yield story
            return
        from huggingface_hub import hf_hub_download

        local = hf_hub_download(repo_id=dataset, filename=HUB_FILES[split], repo_type="dataset")
    except NslmError:
        raise
    except Exception as exc:  # network, auth and hub errors come in many types
        raise NslmError(f"could not download {dataset} ({split}) from the Hugging Face hub: "
                        f"{str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}; "
                        "give local files with --train/--valid instead") from exc
    yield from read_file(Path(local), "eot")
