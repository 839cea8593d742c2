"""Done when: transformer-1m and lstm-1m learn real TinyStories, and greedy stories end by themselves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import nslm
from nslm.cli import main
from nslm.data import DataFolder
from nslm.generate import list_shipped
from nslm.tokenizer import EOT

pytestmark = pytest.mark.slow


def unigram_entropy(data_dir: Path) -> float:
    """Entropy (nats per token) of the training tokens' unigram distribution: what a model that
    ignores context can reach at best."""
    p = np.bincount(DataFolder(data_dir).split("train").ids).astype(np.float64)
    p = p[p > 0] / p.sum()
    return float(-(p * np.log(p)).sum())


def assert_formatted(text: str) -> None:
    assert text.startswith("Once upon a time")
    assert not re.search(r" [.,!?;:]", text), text  # no space before punctuation
    assert "  " not in text and "Ġ" not in text and EOT not in text
    assert not re.search(r"\bi\b", text), text  # "I" capitalised


@pytest.mark.parametrize("preset, steps", [("transformer-1m", 200), ("lstm-1m", 200)])
def test_model_learns_real_stories(tmp_path, data_dir, preset, steps):
    run = tmp_path / preset
    assert main(["train", "--preset", preset, "--data", str(data_dir), "--out", str(run), "--max-steps", str(steps),
                 "--set", "model.context_length=128", "--set", "train.batch_size=16", "--set", "train.warmup_steps=20",
                 "--set", "train.eval_interval=1000", "--set", "train.threads=1", "--device", "cpu"]) == 0
    final = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    entropy = unigram_entropy(data_dir)
    print(f"{preset}: validation loss {final['val_loss']:.3f} nats vs unigram entropy {entropy:.3f}; "
          f"{final['val_bpb']:.3f} bits per byte")
    assert final["event"] == "eval" and final["step"] == steps
    assert final["val_loss"] < entropy - 1.0  # well below what token frequencies alone give
    model = nslm.load(run)
    greedy = model.generate("Once upon a time", temperature=0, max_tokens=60)
    assert_formatted(greedy.text)
    # sampling shows the model learned where stories end
    stories = (model.generate("Once upon a time", temperature=0.8, max_tokens=400, seed=s) for s in range(6))
    assert any(story.ended for story in stories)


def test_greedy_story_stops_at_the_end_of_story_token(tmp_path, story_files):
    """A model that has learnt a handful of real stories by heart tells one greedily and stops at
    end-of-story; word-level tokens come out as formatted text."""
    from nslm.data import prepare

    # the first stories of the input file, in its order (the data folder's train.txt now lacks its dev stories)
    stories = [s.strip() for s in story_files[0][0].read_text().split(EOT) if s.strip()]
    start = [s for s in stories if s.startswith("Once upon a time")][:6]
    others = [s for s in stories if not s.startswith("Once upon a time")][:4]
    train_txt, valid_txt = tmp_path / "few.txt", tmp_path / "few-valid.txt"
    train_txt.write_text("".join(f"{s}\n{EOT}\n" for s in start + others))
    valid_txt.write_text("".join(f"{s}\n{EOT}\n" for s in stories[-3:]))
    data = tmp_path / "few-data"
    # no dev split: the model is meant to learn exactly these ten stories
    prepare([str(train_txt)], [str(valid_txt)], data, tokenizer_kind="word", vocab_size=2000, dev_share=0)
    run = tmp_path / "few-run"
    assert main(["train", "--preset", "transformer-1m", "--data", str(data), "--out", str(run), "--max-steps", "150",
                 "--set", "model.context_length=128", "--set", "train.batch_size=8", "--set", "train.warmup_steps=10",
                 "--set", "train.eval_interval=1000", "--set", "train.sample_tokens=0", "--device", "cpu"]) == 0
    story = nslm.load(run).generate("Once upon a time", temperature=0, max_tokens=500)
    assert story.ended, story.text
    assert_formatted(story.text)
    assert story.text[-1] in ".!?\"", story.text
    assert story.n_tokens > 20


@pytest.mark.parametrize("name", list_shipped() or [pytest.param("none", marks=pytest.mark.skip("no shipped models"))])
def test_shipped_models_end_their_greedy_stories(name):
    """The models shipped in the package, trained longer with `nslm train`, end a greedy story themselves."""
    model = nslm.load(name, device="cpu")
    story = model.generate("Once upon a time", temperature=0, max_tokens=400)
    assert story.ended, story.text
    assert_formatted(story.text)
    assert story.text[-1] in ".!?\"", story.text
