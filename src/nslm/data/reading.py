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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from nslm import hub
from nslm.errors import NslmError, parse_json, what_is_there
from nslm.tokenizer.detok import EOT

SPLIT_MODES = ("eot", "blank-lines", "lines")
TEXT_SUFFIXES = {".txt", ".text", ""}
JSON_SUFFIXES = {".json", ".jsonl", ".ndjson"}
# The hard ceiling on one story: a longer one is skipped while it is read (only its length is kept) and
# reported as `oversized`, so a file without separators cannot make reading hold it whole.
MAX_STORY_CHARS = 1_000_000
# Text is read in pieces of at most this many characters, so even a 50 MB line never sits in memory.
READ_CHUNK = 1 << 16
# A single JSON document has to be parsed whole (several times its size in memory); past this, use JSONL.
MAX_JSON_BYTES = 512 << 20
# A file is refused as binary only when this share of a sample spread over all of it is not text.
BINARY_SHARE = 0.25
SAMPLE_BLOCKS, SAMPLE_BLOCK = 32, 4096
HEAD_CHARS = 200
HUB_DATASET = "roneneldan/TinyStories"
HUB_FILES = {"train": "TinyStories-train.txt", "valid": "TinyStories-valid.txt"}


@dataclass(frozen=True)
class Oversized:
    """A story over MAX_STORY_CHARS, skipped while it was read: where it was, its length and its start."""

    source: str
    chars: int
    head: str


OnOversized = Callable[[Oversized], None]


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
            raise NslmError(f"input file {path} {what_is_there(path)}")
    return files


def _is_story_file(path: Path) -> bool:
    return not path.name.startswith(".") and path.suffix.lower() in TEXT_SUFFIXES | JSON_SUFFIXES


def read_stories(paths: Iterable[str | os.PathLike], split_on: str = "eot",
                 on_oversized: OnOversized | None = None) -> Iterator[str]:
    """Yield the raw text of every story in `paths` (files, folders, globs), in order.

    `split_on` says how plain text files separate stories: `eot` (a `<|endoftext|>` line, the
    published layout; a file without any is an error), `blank-lines` or `lines` (used only for files
    that hold no `<|endoftext|>`, so a mix of layouts can be read in one call). A story over
    MAX_STORY_CHARS is not yielded: `on_oversized` (if given) is told about it instead.
    """
    if split_on not in SPLIT_MODES:
        raise NslmError(f"unknown --split-on {split_on!r}; choose one of {', '.join(SPLIT_MODES)}")
    for path in expand_inputs(paths):
        yield from read_file(path, split_on, on_oversized)


def read_file(path: Path, split_on: str = "eot", on_oversized: OnOversized | None = None) -> Iterator[str]:
    """Yield the stories of one file; raises NslmError for empty, binary or separator-less files."""
    path = Path(path)
    _check_readable(path)
    if path.suffix.lower() in JSON_SUFFIXES:
        records = _read_jsonl(path) if _looks_like_jsonl(path) else _read_json(path)
    else:
        has_separator = _has_separator(path)
        if split_on == "eot" and not has_separator:
            raise _no_separator(path)
        records = _read_text(path, "eot" if has_separator else split_on)
    count = 0
    for story in records:
        if not story:
            continue
        count += 1
        if isinstance(story, Oversized):
            if on_oversized is not None:
                on_oversized(story)
        else:
            yield story
    if count == 0:
        raise NslmError(f"{path} holds no stories")


def _check_readable(path: Path) -> None:
    try:
        size = path.stat().st_size
        sample = _sample(path, size)
    except OSError as exc:
        raise NslmError(f"cannot read {path}: {exc.strerror}") from exc
    if size == 0 or not any(block.strip() for block in sample):
        raise NslmError(f"{path} is empty")
    if _binary_share(sample) > BINARY_SHARE:
        raise NslmError(f"{path} is not text (binary data); give TinyStories .txt, .json or .jsonl files")


def _sample(path: Path, size: int) -> list[bytes]:
    """Blocks spread evenly over the whole file, so its verdict does not depend on what sits first."""
    with open(path, "rb") as f:
        if size <= SAMPLE_BLOCKS * SAMPLE_BLOCK:
            return [f.read()]
        blocks = []
        for i in range(SAMPLE_BLOCKS):
            f.seek(i * (size - SAMPLE_BLOCK) // (SAMPLE_BLOCKS - 1))
            blocks.append(f.read(SAMPLE_BLOCK))
        return blocks


def _binary_share(blocks: list[bytes]) -> float:
    """Share of NUL and control bytes and invalid UTF-8 in the sampled blocks."""
    bad = total = 0
    for block in blocks:
        text = block.decode("utf-8", errors="replace")
        found = sum(1 for ch in text if ch == "\ufffd" or (ord(ch) < 32 and ch not in "\n\r\t\f"))
        bad += max(0, found - 6)  # a multi-byte character cut at either end of a block is not damage
        total += len(text)
    return bad / max(1, total)


def _has_separator(path: Path) -> bool:
    """True when `<|endoftext|>` occurs anywhere in the file (read in pieces; stops at the first one)."""
    needle = EOT.encode("ascii")
    tail = b""
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            if needle in tail + block:
                return True
            tail = block[-(len(needle) - 1):]
    return False


def _no_separator(path: Path) -> NslmError:
    return NslmError(f"{path} has no {EOT} story separators; pass --split-on blank-lines or "
                     "--split-on lines if its stories are separated another way")


class _Story:
    """The story being read: its text while under MAX_STORY_CHARS, only its length and start after."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.chars = 0
        self.head = ""

    def add(self, text: str) -> None:
        if len(self.head) < HEAD_CHARS:
            self.head += text[:HEAD_CHARS - len(self.head)]
        self.chars += len(text)
        if self.chars <= MAX_STORY_CHARS:
            self.parts.append(text)
        else:
            self.parts = []

    def finish(self, source: str) -> "str | Oversized":
        """The stripped story (maybe empty), or an Oversized note; the buffer starts over."""
        if self.chars > MAX_STORY_CHARS:
            story: str | Oversized = Oversized(source, self.chars, self.head.strip())
        else:
            story = "".join(self.parts).strip()
        self.__init__()
        return story


def _pieces(f) -> Iterator[str]:
    """The file's lines, a long line cut into pieces of READ_CHUNK characters (only the last ends in \\n)."""
    while piece := f.readline(READ_CHUNK):
        yield piece


def _read_text(path: Path, split_on: str) -> Iterator[str | Oversized]:
    if split_on == "eot":
        yield from _split_on_eot(path)
        return
    story = _Story()
    number = 1
    line_start = True  # False while the pieces are the rest of a long line
    with open(path, encoding="utf-8", errors="replace", newline=None) as f:
        for piece in _pieces(f):
            ends_line = piece.endswith("\n")
            if split_on == "blank-lines" and line_start and ends_line and not piece.strip():
                yield story.finish(f"{path} story {number}")
                number += 1
                continue
            line_start = ends_line
            story.add(piece)
            if split_on == "lines" and ends_line:
                yield story.finish(f"{path} line {number}")
                number += 1
    yield story.finish(f"{path} story {number}")


def _split_on_eot(path: Path) -> Iterator[str | Oversized]:
    """Stories between `<|endoftext|>` marks (normally a line of its own, but tolerated inside one)."""
    story = _Story()
    number = 1
    carry = ""  # the end of a piece that might be the start of a separator cut in two
    with open(path, encoding="utf-8", errors="replace", newline=None) as f:
        for piece in _pieces(f):
            text = carry + piece
            *done, rest = text.split(EOT)
            for part in done:
                story.add(part)
                yield story.finish(f"{path} story {number}")
                number += 1
            cut = len(rest) - (len(EOT) - 1) if not rest.endswith("\n") else len(rest)
            cut = max(0, cut)
            story.add(rest[:cut])
            carry = rest[cut:]
    story.add(carry)
    yield story.finish(f"{path} story {number}")


def _looks_like_jsonl(path: Path) -> bool:
    if path.suffix.lower() in {".jsonl", ".ndjson"}:
        return True
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline(READ_CHUNK).strip()
    if not first.startswith("{"):
        return False
    try:
        record = json.loads(first)
    except (ValueError, RecursionError):
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


def _read_jsonl(path: Path) -> Iterator[str | Oversized]:
    line = _Story()
    number = 1
    with open(path, encoding="utf-8", errors="replace") as f:
        for piece in _pieces(f):
            line.add(piece)
            if piece.endswith("\n"):
                yield from _jsonl_record(line.finish(f"{path} line {number}"), path, number)
                number += 1
    yield from _jsonl_record(line.finish(f"{path} line {number}"), path, number)


def _jsonl_record(line: str | Oversized, path: Path, number: int) -> Iterator[str | Oversized]:
    if isinstance(line, Oversized):
        yield line
    elif line:
        record = parse_json(line, f"{path} line {number}")  # a bad line refuses the whole file
        yield _checked(_story_of(record, path, f"line {number}").strip(), f"{path} line {number}")


def _checked(story: str, source: str) -> str | Oversized:
    """A story already in memory (JSON, the hub) is held to the same ceiling as one read in pieces."""
    if len(story) > MAX_STORY_CHARS:
        return Oversized(source, len(story), story[:HEAD_CHARS].strip())
    return story


def _read_json(path: Path) -> Iterator[str | Oversized]:
    # a single JSON document has to be parsed whole; the big TinyStories files are text or JSONL
    if path.stat().st_size > MAX_JSON_BYTES:
        raise NslmError(f"{path} is a single JSON document of over {MAX_JSON_BYTES >> 20} MB, too large to parse "
                        "whole; give it as JSONL (one story object per line)")
    data = parse_json(path.read_text(encoding="utf-8", errors="replace"), str(path))
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if not lists:
            raise NslmError(f"{path} holds a JSON object without a list of stories")
        data = lists[0]
    if not isinstance(data, list):
        raise NslmError(f"{path} holds JSON that is not a list of stories")
    for i, record in enumerate(data):
        yield _checked(_story_of(record, path, f"item {i}").strip(), f"{path} item {i}")


def guess_encoding(path: Path) -> str | None:
    """The encoding charset-normalizer finds for the start of a file when it is not UTF-8 (None: UTF-8,
    undecided, or charset-normalizer not installed)."""
    try:
        import charset_normalizer  # optional; installed with requests
    except ImportError:
        return None
    with open(path, "rb") as f:
        head = f.read(1 << 18)
    try:
        head.decode("utf-8")
        return None
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 3:  # only a character cut at the end of the sample
            return None
    best = charset_normalizer.from_bytes(head).best()
    return None if best is None or best.encoding in ("utf_8", "ascii") else best.encoding


def read_hub(split: str, dataset: str = HUB_DATASET, on_oversized: OnOversized | None = None) -> Iterator[str]:
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
            for number, row in enumerate(stream):
                story = _checked((row.get("text") or row.get("story") or "").strip(), f"{dataset} row {number}")
                if isinstance(story, Oversized):
                    if on_oversized is not None:
                        on_oversized(story)
                elif story:
                    yield story
            return
        local = _hub_download(dataset, HUB_FILES[split])
    except NslmError:
        raise
    except Exception as exc:  # network, auth and hub errors come in many types
        raise NslmError(f"could not download {dataset} ({split}) from the Hugging Face hub: "
                        f"{str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}; "
                        "give local files with --train/--valid instead") from exc
    yield from read_file(Path(local), "eot", on_oversized)


def _hub_download(dataset: str, filename: str) -> str:
    """The local path of a dataset file, downloaded with hf_hub_download into the hub's cache; offline, only
    the cache is tried, at once."""
    from huggingface_hub import hf_hub_download

    with hub.quiet():
        if hub.host_resolves():
            return hf_hub_download(repo_id=dataset, filename=filename, repo_type="dataset")
        try:
            return hf_hub_download(repo_id=dataset, filename=filename, repo_type="dataset", local_files_only=True)
        except Exception:  # not in the cache: the hub library's many error types all mean that here
            raise NslmError(f"cannot reach the Hugging Face hub for {dataset} ({filename}): its host name does not "
                            "resolve (offline?), and the file is not in the local hub cache; "
                            "give local files with --train/--valid instead") from None
