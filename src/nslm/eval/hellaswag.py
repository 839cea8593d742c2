"""HellaSwag zero-shot: which of four endings does the model find most likely after the context?

Each ending is scored as the summed log-probability of `" " + ending` after the end-of-story token and the
context. `accuracy` (lm-eval-harness's `acc_norm`) divides that sum by the ending's length in characters:
`len(ending)` of the ending string without the leading space, after harness's preprocessing (Unicode
code points, not UTF-8 bytes: the two differ on non-ASCII endings). A per-character divisor does not
depend on the tokenizer, so BPE, word and character models compare fairly. The unnormalised accuracy
(harness's `acc`) is reported beside it. Chance is 25%; a tie between the best endings counts as wrong.

The default file is the whole validation set (10,042 items) in llama.cpp's cleaned form
(`hellaswag_val_full_llamacpp.jsonl`): its endings are already preprocessed like harness's (WikiHow
`[header]`/`[step]` tags removed), but the second part of the context is not re-capitalised as
lm-eval-harness does, so figures differ slightly from harness numbers on the original file. Files in the
original rowanz format (`ctx_a`, `ctx_b`, `endings`, `label`, `source_id`) are read too and preprocessed
as harness does (its context also starts with the activity label, which ours leaves out).

A `limit` draws a seeded random sample stratified by source (ActivityNet or WikiHow) instead of taking
the first items, which the file orders by source.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from nslm.errors import NslmError
from nslm.eval.datasets import check_file, json_kind, read_jsonl
from nslm.eval.sampling import binomial_se, sample_record, stratified_sample
from nslm.eval.scoring import Scorer

DEFAULT_FILE = "hellaswag_val_full_llamacpp.jsonl"
CHANCE = 0.25
# HellaSwag's validation set lists its 3,243 ActivityNet items before its 6,799 WikiHow items; the
# llama.cpp file keeps that order (`val_index`) but drops `source_id`.
ACTIVITYNET_ITEMS = 3243


def harness_preprocess(text: str) -> str:
    """lm-eval-harness's HellaSwag text clean-up: WikiHow `[title]` becomes '. ', other tags go."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _source(rec: dict) -> str:
    if rec.get("source_id"):
        return str(rec["source_id"]).split("~")[0]
    if "val_index" in rec:
        return "activitynet" if rec["val_index"] < ACTIVITYNET_ITEMS else "wikihow"
    return "?"


def _whole_number(value) -> int | None:
    """A JSON whole number (or digits as text, as some converted files hold), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _item(rec: dict, path: Path, n: int) -> dict:
    """One item of a HellaSwag line, its fields checked; NslmError naming the file and line otherwise."""
    def bad(problem: str) -> NslmError:
        return NslmError(f"{path} line {n}: {problem}; give a HellaSwag JSONL file.")

    original = "ctx_a" in rec and "ctx_b" in rec
    for key in ("ctx_a", "ctx_b") if original else ("ctx",):
        if not isinstance(rec[key], str):
            raise bad(f"{key} must be text, not {json_kind(rec[key])}")
    endings = rec["endings"]
    if not isinstance(endings, list):
        raise bad(f"endings must be a list of 4 texts, not {json_kind(endings)}")
    odd = next((e for e in endings if not isinstance(e, str)), "")
    if not isinstance(odd, str):
        raise bad(f"endings must be a list of 4 texts, not a list holding {json_kind(odd)}")
    if len(endings) != 4:
        raise NslmError(f"{path} line {n} has {len(endings)} endings instead of 4.")
    label = _whole_number(rec["label"])
    if label is None or not 0 <= label < len(endings):
        shown = json.dumps(rec["label"])[:20]
        raise bad(f"label must be the number of the right ending, 0 to {len(endings) - 1}, not {shown}")
    if "val_index" in rec:
        index = _whole_number(rec["val_index"])
        if index is None or index < 0:
            raise bad(f"val_index must be a whole number, not {json.dumps(rec['val_index'])[:20]}")
        rec["val_index"] = index
    activity = rec.get("activity_label", "")
    if not isinstance(activity, str):
        raise bad(f"activity_label must be text, not {json_kind(activity)}")
    if original:  # the original format: clean it up as harness does
        ctx = harness_preprocess(rec["ctx_a"] + " " + rec["ctx_b"].capitalize())
        endings = [harness_preprocess(e) for e in endings]
    else:
        ctx, endings = rec["ctx"], list(endings)
    return {"ctx": ctx, "endings": endings, "label": label, "activity": activity, "source": _source(rec)}


def load_hellaswag(path: str | Path, limit: int | None = None, seed: int = 1234) -> list[dict]:
    """Items `{ctx, endings[4], label, source, row}` from a HellaSwag JSONL file or a folder holding the default file.

    With `limit`, a seeded random sample of that many items, stratified by source, in file order.
    """
    path = Path(path)
    if path.is_dir():
        path = path / DEFAULT_FILE
    check_file(path, "HellaSwag", "give it with --hellaswag.")
    items = []
    for n, rec in read_jsonl(path, "HellaSwag"):
        missing = [k for k in ("endings", "label") if k not in rec]
        if "ctx" not in rec and not ("ctx_a" in rec and "ctx_b" in rec):
            missing.insert(0, "ctx")
        if missing:
            raise NslmError(f"{path} line {n} lacks {'/'.join(missing)}; give a HellaSwag JSONL file.")
        item = _item(rec, path, n)
        item["row"] = len(items)
        items.append(item)
    if not items:
        raise NslmError(f"HellaSwag file {path} holds no items; give a HellaSwag JSONL file.")
    return draw_sample(items, limit, seed)


def draw_sample(items: list[dict], limit: int | None, seed: int) -> list[dict]:
    """All items, or a seeded random sample of `limit` of them stratified by source, in file order."""
    if limit is None or limit >= len(items):
        return items
    return [items[i] for i in stratified_sample([it["source"] for it in items], limit, seed)]


def hellaswag_accuracy(scorer: Scorer, tokenizer, items: list[dict], progress=None) -> dict:
    """Zero-shot accuracy over `items`, normalised per character of the ending (and unnormalised)."""
    pairs, lengths = [], []
    for item in items:
        ctx_ids = tokenizer.encode(item["ctx"])
        for ending in item["endings"]:
            pairs.append((ctx_ids, tokenizer.encode(" " + ending)))
            lengths.append(max(1, len(ending)))  # characters of the ending itself, as harness's len(choice)
    logps = scorer.continuation_logprobs(pairs, progress)
    total = np.array([lp.sum() for lp in logps]).reshape(len(items), 4)
    per_char = total / np.array(lengths, dtype=np.float64).reshape(len(items), 4)
    labels = np.array([item["label"] for item in items])

    def acc(scores):
        # A tie between the best endings counts as wrong, as in BLiMP.
        best = scores.max(axis=1, keepdims=True)
        unique_best = (scores == best).sum(axis=1) == 1
        return float(((scores.argmax(axis=1) == labels) & unique_best).mean()) if len(items) else None

    accuracy = acc(per_char)
    return {
        "accuracy": accuracy,
        "accuracy_se": binomial_se(accuracy, len(items)),
        "accuracy_unnormalised": acc(total),
        "items": len(items),
        "chance": CHANCE,
        "normalisation": "summed log-probability of ' ' + ending divided by len(ending), the ending's characters "
                         "without the leading space (lm-eval-harness's acc_norm)",
    }


def evaluate_hellaswag(story_model, path: str | Path, limit: int | None = None, batch_size: int = 32,
                       seed: int = 1234) -> dict:
    """HellaSwag accuracy of a loaded `StoryModel` on all items, or a seeded sample of `limit` of them."""
    from tqdm import tqdm

    population = load_hellaswag(path)
    items = draw_sample(population, limit, seed)
    scorer = Scorer.for_story_model(story_model, batch_size)
    with tqdm(total=4 * len(items), desc="hellaswag", unit="ending", leave=False) as bar:
        result = hellaswag_accuracy(scorer, story_model.tokenizer, items, bar)
    result["file"] = str(path)
    result["limit"] = limit
    if limit is not None:
        result["sample"] = sample_record([it["source"] for it in population], [it["row"] for it in items], seed,
                                         len(population), "seeded random sample, stratified by source (proportional)")
    result["differs_from_original"] = ("llama.cpp's cleaned text: WikiHow tags removed, ctx_b not re-capitalised"
                                      if Path(path).name.startswith("hellaswag_val_full_llamacpp") or Path(path).is_dir()
                                      else "original format, preprocessed as lm-eval-harness does (no activity label)")
    return result
