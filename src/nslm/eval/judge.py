"""Grading stories with an LLM, as the TinyStories paper did with GPT-4.

The grader sees the story beginning, then `***`, then the model's completion, and is asked for grammar,
creativity, consistency and plot scores out of 10 and the likely age group of the writer. Any
OpenAI-compatible chat endpoint works (`--judge-url`, `--judge-model`, key from an environment variable),
through the official `openai` client. A failed call (timeout, HTTP error) or an answer without the
three required scores is retried with backoff and then recorded as missing with its reason: never a
crash, never a made-up score.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from nslm.errors import NslmError

KEY_ENV = "NSLM_JUDGE_API_KEY"
SCORES = ("grammar", "creativity", "consistency", "plot")
REQUIRED = ("grammar", "creativity", "consistency")
AGE_GROUPS = {"A": "3 or under", "B": "4-5", "C": "6-7", "D": "8-9", "E": "10-12", "F": "13-16"}

PROMPT = """In the following exercise, the student is given a beginning of a story. The student needs to \
complete it into a full story. The exercise tests the student's language abilities and creativity. The \
symbol *** marks the separator between the prescribed beginning and the student's completion:

{beginning} ***{completion}

Please provide your general assessment of the part written by the student (the one after the *** symbol). \
Is it grammatically correct? Is it consistent with the beginning of the story? Pay special attention to \
whether the student manages to complete the sentence which is split in the middle by the separator ***.

Then grade the student's completion in terms of grammar, creativity, consistency with the story's \
beginning, and whether the plot makes sense, each as a score out of 10. Also give your best guess of the \
age of the student, as reflected by the completion, from these age groups: A: 3 or under. B: 4-5. \
C: 6-7. D: 8-9. E: 10-12. F: 13-16.

End your answer with exactly these lines:
Grammar: X/10
Creativity: X/10
Consistency: X/10
Plot: X/10
Age group: LETTER"""

# "Grammar: 8/10", "**Grammar** - 7", "grammar score (out of 10): 6.5", "Consistency = 9 out of 10"
_SCORE = r"\b{name}\b(?:\s+(?:score|rating|grade))?\s*(?:\((?:out of 10|1-10|0-10|/10)\))?\s*[:=\-–—]?\s*(\d{{1,2}}(?:\.\d+)?)(?!\d)\s*(/\s*10|out of 10)?"
_AGE = re.compile(r"\bage(?:\s+group)?\s*[:=\-–—]?\s*\(?([A-F])\b(?:\s*[:(]?\s*(?:\d+(?:\s*-\s*\d+)?|3 or under))?")


def build_prompt(beginning: str, completion: str) -> str:
    """The grading request for one story (the paper's layout: beginning, `***`, completion)."""
    return PROMPT.format(beginning=beginning.rstrip(), completion=completion if completion.startswith(" ") else " " + completion)


def parse_grades(text: str) -> dict | None:
    """Scores (0-10) and age group read from a grader's free-text answer; None when it lacks one of
    grammar, creativity, consistency, or gives a score outside 0-10 or twice with different values."""
    if not isinstance(text, str) or not text.strip():
        return None
    clean = re.sub(r"[*_#`]", "", text)
    grades: dict = {}
    for name in SCORES:
        found = {float(m.group(1)) for m in re.finditer(_SCORE.format(name=name), clean, re.IGNORECASE)}
        if not found:
            continue
        if len(found) > 1 or not 0 <= next(iter(found)) <= 10:
            return None
        grades[name] = next(iter(found))
    if any(name not in grades for name in REQUIRED):
        return None
    age = _AGE.search(clean)
    if age is None:
        age = re.search(r"\bage group\b[^A-Za-z]*(?:is\s+)?([A-F])\b", clean, re.IGNORECASE)
    grades["age_group"] = age.group(1).upper() if age else None
    return grades


def check_settings(url: str | None, timeout: float | None = 60.0, retries: int | None = 3,
                   need_url: bool = True) -> None:
    """NslmError, before any story is graded, for a grader address that is not http(s) with a host (or is
    missing, when `need_url`), a timeout that is not a finite positive number of seconds, or a negative
    number of retries."""
    if not url and need_url:
        raise NslmError("give the grader's address with --judge-url (an OpenAI-compatible /v1 endpoint).")
    if url:
        _check_url(url)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout) or timeout <= 0):
        raise NslmError(f"--judge-timeout must be a positive number of seconds, not {timeout}.")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10):
        # the wait doubles with each retry, so more than 10 would keep one failing story for hours
        raise NslmError(f"--judge-retries must be from 0 to 10, not {retries}.")


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not host:
        raise NslmError(f"--judge-url {url} is not an http:// or https:// address with a host; give the grader's "
                        "OpenAI-compatible endpoint, e.g. https://api.openai.com/v1.")


@dataclass
class Judge:
    """An OpenAI-compatible grader. `grade(beginning, completion)` returns a dict of scores, or one with
    `missing` and the reason when every try failed."""

    url: str
    model: str
    api_key: str | None = None
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 2.0
    temperature: float = 0.0
    max_tokens: int = 400
    client: object = field(default=None, repr=False)

    def __post_init__(self):
        check_settings(self.url, self.timeout, self.retries)
        try:
            from openai import OpenAI
        except ImportError as exc:
            raise NslmError("the `openai` package is needed for LLM grading; run `pip install openai`.") from exc
        # Our own retry loop covers unparseable answers too, so the client does not retry on its own.
        self.client = OpenAI(base_url=self.url, api_key=self.api_key or "none", timeout=self.timeout, max_retries=0)

    def ask(self, prompt: str) -> str:
        reply = self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": prompt}],
            temperature=self.temperature, max_tokens=self.max_tokens)
        return reply.choices[0].message.content or ""

    def grade(self, beginning: str, completion: str) -> dict:
        import openai

        prompt = build_prompt(beginning, completion)
        reasons = []
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                answer = self.ask(prompt)
            except openai.APITimeoutError:
                reasons.append("timeout")
                continue
            except openai.APIStatusError as exc:
                reasons.append(f"HTTP {exc.status_code}")
                if exc.status_code in (400, 401, 403, 404):
                    break  # the same request will fail the same way
                continue
            except openai.OpenAIError as exc:
                reasons.append(type(exc).__name__)
                continue
            except Exception as exc:  # a malformed reply body must not end the whole run
                reasons.append(f"bad reply ({type(exc).__name__})")
                continue
            grades = parse_grades(answer)
            if grades is not None:
                grades["attempts"] = attempt + 1
                grades["answer"] = answer
                return grades
            reasons.append("unparseable answer")
        return {"missing": True, "reasons": reasons, "attempts": len(reasons)}


def judge_from_args(url: str, model: str, key_env: str = KEY_ENV, timeout: float = 60.0, retries: int = 3,
                    backoff: float = 2.0) -> Judge:
    """A Judge whose key comes from the environment variable `key_env` (local servers may need none)."""
    return Judge(url=url, model=model, api_key=os.environ.get(key_env), timeout=timeout, retries=retries,
                 backoff=backoff)


def grade_stories(judge: Judge, records: list[dict]) -> dict:
    """Grades for each generated story and the means over the graded ones (missing ones are counted, not guessed)."""
    from tqdm import tqdm

    items = []
    for rec in tqdm(records, desc="judge", unit="story", leave=False):
        grades = judge.grade(rec["prompt"], rec["completion"])
        items.append({"prompt": rec["prompt"], "completion": rec["completion"], **grades})
    graded = [x for x in items if not x.get("missing")]
    means = {}
    for name in SCORES:
        vals = [x[name] for x in graded if x.get(name) is not None]
        means[name] = sum(vals) / len(vals) if vals else None
    ages = {}
    for x in graded:
        if x.get("age_group"):
            ages[x["age_group"]] = ages.get(x["age_group"], 0) + 1
    return {"judge_model": judge.model, "judge_url": judge.url, "stories": len(items), "graded": len(graded),
            "missing": len(items) - len(graded), "means": means, "age_groups": ages, "items": items}
