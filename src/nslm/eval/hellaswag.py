"""HellaSwag zero-shot: which of four endings does the model find most likely after the context?

Each ending is scored as the summed log-probability of `" " + ending` after the end-of-story token and the
context, divided by the ending's length in UTF-8 bytes (per-character normalisation, the convention of
lm-eval-harness's `acc_norm`): tokenizer-independent, so BPE, word and character models compare fairly.
The unnormalised accuracy is reported beside it. Chance is 25%.

The default file is the whole validation set (10,042 items) in llama.cpp's cleaned form
(`hellaswag_val_full_llamacpp.jsonl`): WikiHow `[header]`/`[step]` tags are removed and the second part
of the context is not re-capitalised as lm-eval-harness does, so figures differ slightly from
harness numbers on the original file. Files in the original rowanz format (`ctx`, `endings`, `label`)
are read too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nslm.errors import NslmError
from nslm.eval.scoring import Scorer

DEFAULT_FILE = "hellaswag_val_full_llamacpp.jsonl"
CHANCE = 0.25


def load_hellaswag(path: str | Path, limit: int | None = None) -> list[dict]:
    """Items `{ctx, endings[4], label}` from a HellaSwag JSONL file or a folder holding the default file."""
    path = Path(path)
    if path.is_dir():
        path = path / DEFAULT_FILE
    if not path.is_file():
        raise NslmError(f"HellaSwag file {path} does not exist; give it with --hellaswag.")
    items = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            rec = json.loads(line)
            try:
                item = {"ctx": rec["ctx"], "endings": list(rec["endings"]), "label": int(rec["label"]),
                        "activity": rec.get("activity_label", "")}
            except (KeyError, TypeError, ValueError) as exc:
                raise NslmError(f"{path} line {n} lacks ctx/endings/label; give a HellaSwag JSONL file.") from exc
            if len(item["endings"]) != 4:
                raise NslmError(f"{path} line {n} has {len(item['endings'])} endings instead of 4.")
            items.append(item)
            if limit is not None and len(items) >= limit:
                break
    return items


def hellaswag_accuracy(scorer: Scorer, tokenizer, items: list[dict], progress=None) -> dict:
    """Zero-shot accuracy with per-byte normalisation (and without) over `items`."""
    pairs, lengths = [], []
    for item in items:
        ctx_ids = tokenizer.encode(item["ctx"])
        for ending in item["endings"]:
            text = " " + ending
            pairs.append((ctx_ids, tokenizer.encode(text)))
            lengths.append(max(1, len(text.encode("utf-8"))))
    logps = scorer.continuation_logprobs(pairs, progress)
    total = np.array([lp.sum() for lp in logps]).reshape(len(items), 4)
    per_byte = total / np.array(lengths, dtype=np.float64).reshape(len(items), 4)
    labels = np.array([item["label"] for item in items])

    def acc(scores):
        # A tie between the best endings counts as wrong, as in BLiMP.
        best = scores.max(axis=1, keepdims=True)
        unique_best = (scores == best).sum(axis=1) == 1
        return float(((scores.argmax(axis=1) == labels) & unique_best).mean()) if len(items) else None

    return {
        "accuracy": acc(per_byte),
        "accuracy_unnormalised": acc(total),
        "items": len(items),
        "chance": CHANCE,
        "normalisation": "summed log-probability of ' ' + ending divided by its UTF-8 bytes (per character)",
    }


def evaluate_hellaswag(story_model, path: str | Path, limit: int | None = None, batch_size: int = 32) -> dict:
    """HellaSwag accuracy of a loaded `StoryModel` on the first `limit` items (all by default)."""
    from tqdm import tqdm

    items = load_hellaswag(path, limit)
    scorer = Scorer.for_story_model(story_model, batch_size)
    with tqdm(total=4 * len(items), desc="hellaswag", unit="ending", leave=False) as bar:
        result = hellaswag_accuracy(scorer, story_model.tokenizer, items, bar)
    result["file"] = str(path)
    result["limit"] = limit
    result["differs_from_original"] = ("llama.cpp's cleaned text: WikiHow tags removed, ctx_b not re-capitalised"
                                      if Path(path).name.startswith("hellaswag_val_full_llamacpp") or Path(path).is_dir()
                                      else "original format")
    return result
