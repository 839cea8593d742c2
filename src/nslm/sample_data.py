"""Where the real TinyStories sample files are, and a small synthetic corpus for when they are absent.

Tests, benchmarks and the README's main job read the shared files from `../shared/data` (beside the
checkout) or from `$NSLM_SHARED_DATA`; a machine without them falls back to `synthetic_stories`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

STD_TRAIN_FILES = ("TinyStories-train-sample.txt", "TinyStoriesV2-GPT4-train-sample.txt", "TinyStories-train-more.txt")
STD_VALID_FILE = "TinyStories-valid-sample.txt"


def shared_data_dir() -> Path | None:
    """The shared data folder, or None when this machine has none."""
    env = os.environ.get("NSLM_SHARED_DATA")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve()
    candidates += [parent / "shared" / "data" for parent in here.parents]
    candidates.append(Path.cwd().parent / "shared" / "data")
    for path in candidates:
        if (path / "tinystories-std").is_dir():
            return path
    return None


def std_files() -> tuple[list[Path], Path] | None:
    """(train files, validation file) of `tinystories-std`, or None when absent."""
    root = shared_data_dir()
    if root is None:
        return None
    std = root / "tinystories-std"
    train = [std / name for name in STD_TRAIN_FILES if (std / name).is_file()]
    valid = std / STD_VALID_FILE
    if not train or not valid.is_file():
        return None
    return train, valid


_NAMES = ["Lily", "Tom", "Ben", "Mia", "Sam", "Anna", "Max", "Sue", "Tim", "Lucy"]
_ANIMALS = ["cat", "dog", "bird", "frog", "bunny", "duck", "bear", "fox"]
_THINGS = ["ball", "kite", "box", "hat", "cake", "boat", "book", "flower"]
_PLACES = ["park", "garden", "forest", "house", "beach", "yard"]
_ADJ = ["big", "red", "shiny", "small", "soft", "happy", "blue", "funny"]
_FEEL = ["happy", "sad", "scared", "excited", "tired", "proud"]


def synthetic_stories(n: int, seed: int = 0) -> list[str]:
    """`n` short, grammatical, TinyStories-like stories from templates (deterministic for a seed)."""
    rng = random.Random(seed)
    stories = []
    for _ in range(n):
        name, friend = rng.sample(_NAMES, 2)
        animal, thing, place = rng.choice(_ANIMALS), rng.choice(_THINGS), rng.choice(_PLACES)
        adj, feel, feel2 = rng.choice(_ADJ), rng.choice(_FEEL), rng.choice(_FEEL)
        sentences = [
            f"Once upon a time, there was a little {animal} named {name}.",
            f"{name} loved to play in the {place} with a {adj} {thing}.",
            f"One day, {name} met {friend}.",
            f'{friend} said, "Can I play with your {thing}?"',
            f"{name} felt {feel}, but then {name} said, \"Yes, let's play together!\"",
            f"They played all day and {friend} was very {feel2}.",
            f"In the end, {name} and {friend} became best friends.",
        ]
        if rng.random() < 0.5:
            sentences.insert(3, f"The sun was warm and the sky was {rng.choice(['blue', 'bright', 'clear'])}.")
        stories.append(" ".join(sentences))
    return stories
