"""Shared fixtures: small real TinyStories files (or a synthetic stand-in) and prepared data folders.

- `story_files` -> (train files, valid file): the first ~1,500 stories of the std train files plus
  the 220 std validation stories, or synthetic stories when ../shared/data is absent.
- `data_dir` -> a data folder made by `nslm.data.prepare` from `story_files` (BPE, vocabulary 1024).
- `make_data_dir(kind="bpe", vocab_size=1024)` -> the same for other tokenizer kinds (cached).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nslm.sample_data import std_files, synthetic_stories
from nslm.tokenizer import EOT

TRAIN_STORIES = 1500


def _write_stories(path: Path, stories: list[str]) -> Path:
    path.write_text("".join(f"{s}\n{EOT}\n" for s in stories), encoding="utf-8")
    return path


def _first_stories(path: Path, n: int) -> list[str]:
    stories: list[str] = []
    with open(path, encoding="utf-8") as f:
        buf: list[str] = []
        for line in f:
            if line.strip() == EOT:
                stories.append("".join(buf).strip())
                buf = []
                if len(stories) == n:
                    break
            else:
                buf.append(line)
    return [s for s in stories if s]


@pytest.fixture(scope="session")
def story_files(tmp_path_factory) -> tuple[list[Path], Path]:
    """(train files, valid file) of real TinyStories text, small enough for fast tests."""
    folder = tmp_path_factory.mktemp("stories")
    std = std_files()
    if std is None:
        weather = ["sunny", "rainy", "windy", "cold", "warm", "snowy"]
        days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
        # synthetic templates repeat; vary them so de-duplication keeps most of them
        train = [f"{s} It was a {weather[i % 6]} {days[i % 7]}." for i, s in
                 enumerate(synthetic_stories(TRAIN_STORIES, seed=1))]
        valid = [f"{s} It was a {weather[i % 5]} {days[i % 3]}." for i, s in enumerate(synthetic_stories(220, seed=2))]
        return [_write_stories(folder / "train.txt", train)], _write_stories(folder / "valid.txt", valid)
    train_paths, valid_path = std
    train = _first_stories(train_paths[0], TRAIN_STORIES)
    return [_write_stories(folder / "train.txt", train)], valid_path


@pytest.fixture(scope="session")
def make_data_dir(tmp_path_factory, story_files):
    """Factory: `make_data_dir(kind="bpe", vocab_size=1024) -> Path` of a prepared data folder (cached)."""
    from nslm.data import prepare

    made: dict[tuple[str, int | None], Path] = {}
    train, valid = story_files

    def make(kind: str = "bpe", vocab_size: int | None = 1024) -> Path:
        key = (kind, vocab_size)
        if key not in made:
            out = tmp_path_factory.mktemp("data") / f"{kind}-{vocab_size}"
            prepare([str(p) for p in train], [str(valid)], out, tokenizer_kind=kind, vocab_size=vocab_size)
            made[key] = out
        return made[key]

    return make


@pytest.fixture(scope="session")
def data_dir(make_data_dir) -> Path:
    """A data folder (train/valid.txt, tokenizer.json, *.bin, meta.json) with a 1024-token BPE."""
    return make_data_dir("bpe", 1024)
