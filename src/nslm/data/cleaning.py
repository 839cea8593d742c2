"""Clean stories: fix broken encodings, normalise whitespace and quotes, drop incomplete, duplicated,
leaked and out-of-vocabulary stories. Every rule can be switched off and is counted in a report.

De-duplication keeps only hashes and MinHash band keys, never the stories themselves:
- exact duplicates: a 64-bit hash of the story's lowercased letters and digits, so stories that differ
  only in punctuation, case, spacing or encoding count as the same;
- near duplicates: datasketch MinHash (64 permutations) over word 3-grams, banded as in MinHash LSH
  for Jaccard similarity 0.85 (see `BandIndex`). 64 permutations are enough to separate 0.85-similar
  pairs from the many TinyStories that merely share a template, at a third of the default's cost.
"""

from __future__ import annotations

import hashlib
import math
import re
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator

import numpy as np

from nslm.data.reading import MAX_STORY_CHARS, Oversized
from nslm.errors import NslmError

RULES = ("oversized", "unreadable", "incomplete", "too_short", "too_long", "leakage", "exact_duplicate",
         "near_duplicate", "vocab_limit")
# What to change when a rule removes every story (the `unreadable` advice is completed by the caller).
RULE_ADVICE = {
    "oversized": "are its stories separated? (<|endoftext|> lines, or --split-on blank-lines / lines)",
    "unreadable": "the text is probably not UTF-8",
    "incomplete": "keep them with --no-drop-incomplete",
    "too_short": "lower --min-words",
    "too_long": "raise --max-words (0 turns it off)",
    "leakage": "they repeat the validation stories; --no-leakage-check keeps them",
    "exact_duplicate": "--no-dedup keeps them",
    "near_duplicate": "raise --near-dup-threshold or pass --no-near-dup",
    "vocab_limit": "raise --vocab-limit",
}
EXAMPLES_PER_RULE = 3
EXAMPLE_CHARS = 160
# MinHash hashes this many shingles at a time: datasketch makes a [num_perm x shingles] uint64 array
# (several, counting temporaries), which for a 1 MB story in one batch would be a few hundred MB.
SHINGLE_BATCH = 4096

_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_KEY_RE = re.compile(r"[^a-z0-9]+")
# A complete story ends with sentence punctuation, maybe followed by closing quotes or brackets.
_COMPLETE_RE = re.compile(r"[.!?…][\"'”’)\]]*\s*$")
# A closing quote (E2 80 9D) read as cp1252 loses its last byte, which cp1252 lacks: `â€` followed by
# anything that is not a cp1252 continuation byte was a `”`.
_CP1252_CONTINUATION = bytes(range(0x80, 0xC0)).decode("cp1252", errors="ignore")
_LOST_CLOSING_QUOTE_RE = re.compile(f"â€(?![{re.escape(_CP1252_CONTINUATION)}])\\x9d?")
_MOJIBAKE_RE = re.compile("â€|Ã[\\x80-\\xbf]|Â[\\x80-\\xbf]|\ufffd|†")
_CONTROL_RE = re.compile("[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f]")
_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‟": '"', "″": '"', "«": '"', "»": '"',
                         "‘": "'", "’": "'", "‚": "'", "‛": "'", "′": "'", "`": "'"})
_SPACES_RE = re.compile("[ \\t\\u00a0\\u2000-\\u200b\\u202f\\u205f\\u3000\\ufeff]+")
_MANY_NEWLINES_RE = re.compile("\\n{3,}")


@dataclass
class CleanConfig:
    """Which cleaning rules run, and their limits (0 turns a word limit off)."""

    fix_encoding: bool = True
    normalize_whitespace: bool = True
    normalize_quotes: bool = True
    drop_incomplete: bool = True
    min_words: int = 20
    max_words: int = 1000
    dedup_exact: bool = True
    dedup_near: bool = True
    near_threshold: float = 0.85
    num_perm: int = 64
    drop_leakage: bool = True
    vocab_limit: int | None = None

    def validate(self) -> "CleanConfig":
        if not 0.0 < self.near_threshold <= 1.0:
            raise NslmError(f"--near-dup-threshold must lie in (0, 1], not {self.near_threshold}")
        if self.num_perm < 8:
            raise NslmError(f"--num-perm must be at least 8, not {self.num_perm}")
        if self.min_words < 0 or self.max_words < 0:
            raise NslmError("--min-words and --max-words must not be negative")
        if self.max_words and self.min_words > self.max_words:
            raise NslmError(f"--min-words {self.min_words} is above --max-words {self.max_words}")
        if self.vocab_limit is not None and self.vocab_limit < 1:
            raise NslmError(f"--vocab-limit must be a positive number of words, not {self.vocab_limit}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def fix_encoding(text: str) -> str:
    """Repair mojibake such as `â€™` (UTF-8 read as cp1252) with ftfy; quotes stay as they are."""
    if text.isascii():
        return text
    import ftfy

    text = _LOST_CLOSING_QUOTE_RE.sub("”", text)
    config = ftfy.TextFixerConfig(uncurl_quotes=False, fix_line_breaks=False, fix_character_width=False,
                                  fix_latin_ligatures=False, explain=False)
    return ftfy.fix_text(text, config)


def unreadable_spot(text: str) -> str | None:
    """Where a story still holds replacement characters, control bytes or mojibake (None: readable)."""
    match = _MOJIBAKE_RE.search(text) or _CONTROL_RE.search(text)
    if match:
        return repr(text[max(0, match.start() - 30):match.end() + 10])
    letters = sum(map(str.isalpha, text))
    return "mostly not letters" if letters < 0.5 * len(text) else None


def normalize_whitespace(text: str) -> str:
    """One space between words, no spaces at line ends, at most one blank line, no outer blanks."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [_SPACES_RE.sub(" ", line).strip() for line in text.split("\n")]
    return _MANY_NEWLINES_RE.sub("\n\n", "\n".join(lines)).strip()


def normalize_quotes(text: str) -> str:
    """Curly and other typographic quotes become straight `"` and `'`; `…` becomes `...`."""
    return text.translate(_QUOTES).replace("…", "...")


def is_complete(text: str) -> bool:
    """True when the story ends with `.`, `!` or `?` (maybe followed by closing quotes)."""
    return bool(_COMPLETE_RE.search(text))


def words_of(text: str) -> list[str]:
    """Lowercased words (letters/digits with an optional `'s`-like suffix), as the vocabulary counts them."""
    return _WORD_RE.findall(text.lower())


def dedup_key(text: str) -> int:
    """64-bit hash of the lowercased letters and digits: equal for stories that differ only in form."""
    norm = _KEY_RE.sub(" ", text.lower()).strip()
    return int.from_bytes(hashlib.blake2b(norm.encode("utf-8"), digest_size=8).digest(), "little")


def _shingles(text: str, n: int = 3) -> list[bytes]:
    words = _KEY_RE.sub(" ", text.lower()).split()
    return [" ".join(words[i:i + n]).encode("utf-8") for i in range(max(0, len(words) - n + 1))]


def _example(text: str, tail: bool = False) -> str:
    text = text.replace("\n", " ")
    if len(text) <= EXAMPLE_CHARS:
        return text
    return "..." + text[-(EXAMPLE_CHARS - 3):] if tail else text[:EXAMPLE_CHARS - 3] + "..."


@dataclass
class SplitReport:
    """What cleaning did to one split: stories removed per rule (with examples) and changed per fix."""

    stories_in: int = 0
    characters_in: int = 0
    removed: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)
    changed: Counter = field(default_factory=Counter)
    change_examples: dict = field(default_factory=dict)
    stories_out: int = 0
    characters_out: int = 0
    words_out: int = 0
    vocabulary: Counter = field(default_factory=Counter)

    def drop(self, rule: str, text: str, detail: str | None = None) -> None:
        self.removed[rule] += 1
        examples = self.examples.setdefault(rule, [])
        if len(examples) < EXAMPLES_PER_RULE:
            shown = _example(text, tail=rule == "incomplete")  # the missing end is what matters there
            examples.append(shown if detail is None else f"{shown}  [{detail}]")

    def change(self, fix: str, before: str, after: str) -> None:
        self.changed[fix] += 1
        examples = self.change_examples.setdefault(fix, [])
        if len(examples) < EXAMPLES_PER_RULE:
            examples.append({"before": _example(before), "after": _example(after)})

    def keep(self, text: str) -> None:
        words = words_of(text)
        self.stories_out += 1
        self.characters_out += len(text)
        self.words_out += len(words)
        self.vocabulary.update(words)

    def to_dict(self) -> dict:
        rules, remaining = [], self.stories_in
        for rule in RULES:
            gone = self.removed.get(rule, 0)
            rules.append({"rule": rule, "in": remaining, "removed": gone, "out": remaining - gone,
                          "examples": self.examples.get(rule, [])})
            remaining -= gone
        return {
            "stories_in": self.stories_in, "stories_out": self.stories_out,
            "characters_in": self.characters_in, "characters_out": self.characters_out,
            "words_out": self.words_out, "vocabulary_out": len(self.vocabulary),
            "rules": rules,
            "changed": {fix: {"stories": n, "examples": self.change_examples.get(fix, [])}
                        for fix, n in sorted(self.changed.items())},
        }


class BandIndex:
    """The banding half of MinHash LSH, with the band hashes kept in a Bloom filter.

    datasketch's MinHashLSH holds about 4.5 KB per story (bytes keys, sets, a reverse index), which
    is 10 GB for the 2.1M TinyStories. Near-duplicate removal only asks "does an earlier story share a
    band?", so a Bloom filter answers it in a fixed 57 MB for up to 4M stories (a false alarm for
    fewer than 1 story in 1,000 at that size, far fewer below it). The band layout (bands x rows) is
    datasketch's own optimum for the threshold.
    """

    def __init__(self, threshold: float, num_perm: int, capacity: int = 4_000_000, error_rate: float = 1e-4):
        from datasketch import MinHashLSH

        # weigh missed duplicates above false alarms: 6 bands x 10 rows for 0.85 with 64 permutations
        # flag 73% of pairs at similarity 0.85, 92% at 0.9, 16% at 0.7 and 1% at 0.5
        layout = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.2, 0.8))
        self.bands, self.rows = layout.b, layout.r
        entries = capacity * self.bands
        self.n_bits = int(-entries * math.log(error_rate) / math.log(2) ** 2)
        self.n_hashes = max(1, round(self.n_bits / entries * math.log(2)))
        self._bits = np.zeros((self.n_bits + 7) // 8, dtype=np.uint8)
        self._steps = np.arange(self.n_hashes, dtype=np.uint64)
        self.count = 0

    def keys(self, hashvalues) -> np.ndarray:
        """Two 64-bit hashes per band of one MinHash signature, shape [bands, 2]."""
        data = hashvalues.tobytes()
        width = len(data) // len(hashvalues) * self.rows
        digests = [hashlib.blake2b(data[i * width:(i + 1) * width], digest_size=16, person=bytes([i])).digest()
                   for i in range(self.bands)]
        return np.frombuffer(b"".join(digests), dtype="<u8").reshape(self.bands, 2)

    def _positions(self, keys: np.ndarray) -> np.ndarray:
        # double hashing: position_i = h1 + i * h2 (mod n_bits); uint64 wrap-around is fine
        with np.errstate(over="ignore"):
            positions = keys[:, :1] + self._steps[None, :] * (keys[:, 1:] | np.uint64(1))
        return positions % np.uint64(self.n_bits)

    def contains(self, keys: np.ndarray) -> bool:
        """True when some band's bits are all set (an earlier story likely shared that band)."""
        positions = self._positions(keys)
        bits = (self._bits[positions >> np.uint64(3)] >> (positions & np.uint64(7)).astype(np.uint8)) & 1
        return bool(bits.all(axis=1).any())

    def add(self, keys: np.ndarray) -> None:
        flat = self._positions(keys).ravel()
        np.bitwise_or.at(self._bits, flat >> np.uint64(3), np.left_shift(np.uint8(1), (flat & np.uint64(7)).astype(np.uint8)))
        self.count += 1

    def __len__(self) -> int:
        return self.count


class Cleaner:
    """Cleans stories split by split, remembering hashes across splits for de-duplication and leakage.

    Clean the validation split first: train stories equal or near to a validation story are then
    counted as `leakage` (and dropped), so validation text never reaches training.
    """

    def __init__(self, config: CleanConfig | None = None):
        self.config = (config or CleanConfig()).validate()
        self.reports: dict[str, SplitReport] = {}
        self._seen: set[int] = set()  # exact keys of kept stories, both splits
        self._valid_keys: set[int] = set()
        self._near = self._near_valid = None
        self._perms = self._scheme = None
        if self.config.dedup_near or self.config.drop_leakage:
            from datasketch import MinHash

            self._near = BandIndex(self.config.near_threshold, self.config.num_perm)
            self._near_valid = BandIndex(self.config.near_threshold, self.config.num_perm, capacity=200_000)
            template = MinHash(num_perm=self.config.num_perm, seed=1)
            self._perms, self._scheme = template.permutations, template.scheme

    def report(self, split: str) -> SplitReport:
        return self.reports.setdefault(split, SplitReport())

    def clean(self, stories: Iterable[str], split: str) -> Iterator[str]:
        """Yield the cleaned stories of `split` that pass every rule (vocab_limit is applied later)."""
        for story in stories:
            kept = self.clean_one(story, split)
            if kept is not None:
                yield kept

    def drop_oversized(self, note: Oversized, split: str) -> None:
        """Count a story that reading skipped for being over the hard ceiling (it was never held whole)."""
        rep = self.report(split)
        rep.stories_in += 1
        rep.characters_in += note.chars
        rep.drop("oversized", note.head, f"{note.chars:,} characters, over the {MAX_STORY_CHARS:,} ceiling, "
                 f"at {note.source}")

    def clean_one(self, text: str, split: str) -> str | None:
        """The cleaned story, or None when a rule drops it (the report of `split` counts either way)."""
        cfg, rep = self.config, self.report(split)
        rep.stories_in += 1
        rep.characters_in += len(text)
        original = text
        if cfg.fix_encoding:
            fixed = fix_encoding(text)
            if fixed != text:
                rep.change("encoding", text, fixed)
            text = fixed
        spot = unreadable_spot(text)
        if spot is not None:
            rep.drop("unreadable", original, f"at {spot}")
            return None
        if cfg.normalize_whitespace:
            text = self._fix(rep, "whitespace", text, normalize_whitespace)
        if cfg.normalize_quotes:
            text = self._fix(rep, "quotes", text, normalize_quotes)
        if cfg.drop_incomplete and not is_complete(text):
            rep.drop("incomplete", text, "no final punctuation")
            return None
        n_words = len(text.split())
        if cfg.min_words and n_words < cfg.min_words:
            rep.drop("too_short", text, f"{n_words} words")
            return None
        if cfg.max_words and n_words > cfg.max_words:
            rep.drop("too_long", text, f"{n_words} words")
            return None
        if not self._is_new(text, split, rep):
            return None
        rep.keep(text)
        return text

    @staticmethod
    def _fix(rep: SplitReport, name: str, text: str, fn) -> str:
        fixed = fn(text)
        if fixed != text:
            rep.change(name, text, fixed)
        return fixed

    def _is_new(self, text: str, split: str, rep: SplitReport) -> bool:
        cfg = self.config
        is_valid = split == "valid"
        check_leak = cfg.drop_leakage and not is_valid
        key = dedup_key(text)
        if check_leak and key in self._valid_keys:
            rep.drop("leakage", text, "same as a validation story")
            return False
        if cfg.dedup_exact and key in self._seen:
            rep.drop("exact_duplicate", text)
            return False
        bands = self._band_keys(text) if self._near is not None else None
        if bands is not None:
            if check_leak and self._near_valid.contains(bands):
                rep.drop("leakage", text, "near a validation story")
                return False
            if cfg.dedup_near and self._near.contains(bands):
                rep.drop("near_duplicate", text)
                return False
        if cfg.dedup_exact:
            self._seen.add(key)
        if is_valid:
            self._valid_keys.add(key)
        if bands is not None:
            if cfg.dedup_near:
                self._near.add(bands)
            if is_valid:
                self._near_valid.add(bands)
        return True

    def _band_keys(self, text: str) -> np.ndarray | None:
        from datasketch import MinHash

        shingles = _shingles(text)
        if not shingles:
            return None
        # crc32 is a C call, 30x faster than datasketch's default sha1 and spread well enough for shingles
        m = MinHash(num_perm=self.config.num_perm, permutations=self._perms, scheme=self._scheme,
                    hashfunc=zlib.crc32)
        for start in range(0, len(shingles), SHINGLE_BATCH):  # the minimum over batches is the same
            m.update_batch(shingles[start:start + SHINGLE_BATCH])
        return self._near.keys(m.hashvalues)


def vocab_filter(stories: Iterable[str], allowed: set[str], rep: SplitReport) -> Iterator[str]:
    """Keep stories whose words all lie in `allowed`; dropped ones move from kept to `vocab_limit`."""
    for text in stories:
        outside = [w for w in words_of(text) if w not in allowed]
        if outside:
            rep.drop("vocab_limit", text, "outside: " + ", ".join(sorted(set(outside))[:5]))
            words = words_of(text)
            rep.stories_out -= 1
            rep.characters_out -= len(text)
            rep.words_out -= len(words)
            rep.vocabulary.subtract(words)
            continue
        yield text


def finish_vocabulary(rep: SplitReport) -> None:
    """Forget words whose count fell to zero after `vocab_filter`."""
    rep.vocabulary = +rep.vocabulary
