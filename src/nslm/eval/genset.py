"""The generation set: one story per prompt from a fixed prompt list and seed, saved as JSONL.

Default prompts: the 44 story beginnings the TinyStories paper graded with GPT-4
(`shared/data/tinystories_eval_prompts/Evaluation prompts.yaml`); on a machine without them, nslm's own 16
story openings (`story_openings.yaml` beside this module), and `prompt_set` says which. Any YAML list of
strings, JSON list, or text file with one prompt per line works too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from nslm.atomic import atomic_write_text
from nslm.errors import NslmError
from nslm.eval.datasets import bundled_data_path, check_file, default_data_path, read_jsonl, read_text, text_field


def default_prompts_path() -> Path:
    """The paper's prompt file in the shared data folder, else nslm's own story openings."""
    return default_data_path("prompts") or bundled_data_path("prompts")


def prompt_set(path: str | Path | None = None) -> str:
    """Which prompts `load_prompts(path)` reads, in words for a report."""
    path = Path(path) if path is not None else default_prompts_path()
    if path == bundled_data_path("prompts"):
        return "nslm's own story openings (the TinyStories paper's evaluation prompts are not on this machine)"
    if path == default_data_path("prompts"):
        return "the TinyStories paper's evaluation prompts"
    return f"the prompts of {path}"


def load_prompts(path: str | Path | None = None) -> list[str]:
    """Prompts from a YAML/JSON list or a text file (one per line); by default the paper's prompts, else
    nslm's own story openings."""
    path = Path(path) if path is not None else default_prompts_path()
    if not path.is_file():
        raise NslmError(f"prompt file {path} does not exist; give a YAML list or a text file with one prompt per line.")
    text = read_text(path, "prompt")
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        import yaml

        try:
            items = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise NslmError(f"prompt file {path} is not valid YAML ({str(exc).splitlines()[0]}).") from exc
        if not isinstance(items, list) or not all(isinstance(p, str) for p in items):
            raise NslmError(f"prompt file {path} must hold a list of strings.")
    else:
        items = text.splitlines()
    prompts = [p.strip() for p in items if p and p.strip()]
    if not prompts:
        raise NslmError(f"prompt file {path} holds no prompts.")
    return prompts


def generate_set(story_model, prompts: Iterable[str], seed: int = 1234, max_tokens: int = 300,
                 temperature: float = 0.8, top_k: int | None = None, top_p: float | None = None) -> list[dict]:
    """One story per prompt; prompt i uses seed `seed + i`, so the set is the same on every run.

    Each record: prompt, completion, text (prompt + completion, formatted), tokens (generated),
    ended (stopped by itself at the end-of-story token), seed.
    """
    prompts = list(prompts)
    seeds = [seed + i for i in range(len(prompts))]
    # one batch: the same stories as one by one (each row has its own seed and position), several times faster
    stories = story_model.generate_batch(prompts, max_tokens=max_tokens, temperature=temperature, top_k=top_k,
                                         top_p=top_p, seeds=seeds)
    return [{"prompt": prompt, "completion": story.completion, "text": story.text, "tokens": int(story.n_tokens),
             "ended": bool(story.ended), "seed": s} for prompt, story, s in zip(prompts, stories, seeds)]


def save_jsonl(records: list[dict], path: str | Path) -> None:
    """Write records as one JSON object per line (atomically)."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def load_jsonl(path: str | Path) -> list[dict]:
    """Read a generation set; NslmError (naming the file and line) when the file is missing, empty, not
    UTF-8 JSONL, or a record lacks a text 'completion' (or has a 'prompt' or 'text' that is not text)."""
    path = check_file(Path(path), "story", "make one with `nslm eval generate`.")
    records = []
    for n, rec in read_jsonl(path, "story"):
        if "completion" not in rec:
            raise NslmError(f"{path} line {n} has no 'completion' field; make the file with `nslm eval generate`.")
        rec["completion"] = text_field(rec, "completion", path, n, "story")
        rec["prompt"] = text_field(rec, "prompt", path, n, "story", default="")
        rec["text"] = text_field(rec, "text", path, n, "story", default=rec["prompt"] + rec["completion"])
        records.append(rec)
    if not records:
        raise NslmError(f"story file {path} holds no stories; make one with `nslm eval generate`.")
    return records
