"""Turn word-level tokens (`lily said , " i don ' t know ! "`) back into clean text.

`format_words` is public because generation formats word-level samples with it too.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Iterable

EOT = "<|endoftext|>"

# Suffixes that an apostrophe joins to the word before it: don ' t -> don't, lily ' s -> lily's.
CONTRACTION_SUFFIXES = frozenset({"s", "t", "m", "re", "ve", "ll", "d"})
ATTACH_LEFT = frozenset(".,!?;:)]}%")
ATTACH_RIGHT = frozenset("([{$#")
SENTENCE_END = frozenset(".!?")

_WORD_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|[.!?]|[\"“”]")


def _is_word(token: str) -> bool:
    return any(ch.isalnum() for ch in token)


def _capitalise(word: str) -> str:
    return word[:1].upper() + word[1:]


def _recase(word: str, casing: dict[str, str]) -> str:
    """Apply the usual casing to a word, keeping contraction suffixes: i'm -> I'm, lily's -> Lily's."""
    base, sep, rest = word.partition("'")
    if base in casing:
        base = casing[base]
    elif base == "i":
        base = "I"
    return base + sep + rest


def _join_contractions(tokens: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if tok in ("'", "’") and out and _is_word(out[-1]) and nxt in CONTRACTION_SUFFIXES:
            out[-1] = f"{out[-1]}'{nxt}"
            i += 2
            continue
        if tok == "." and out and set(out[-1]) == {"."}:  # . . . -> ...
            out[-1] += "."
            i += 1
            continue
        out.append(tok)
        i += 1
    return out


def _format_piece(text: str, casing: dict[str, str]) -> str:
    tokens = _join_contractions(text.split())
    pieces: list[str] = []
    glue_next = True  # no space before the first token
    capital_next = True
    open_double = open_single = False
    for i, tok in enumerate(tokens):
        glue_this = glue_next
        glue_next = False
        if tok == '"':
            if open_double:  # closing quote hugs the word before it
                glue_this = True
            else:
                glue_next = True
                capital_next = True
            open_double = not open_double
        elif tok == "'":
            if open_single:
                glue_this = True
            else:
                glue_next = True
            open_single = not open_single
        elif tok == "-" and pieces and i + 1 < len(tokens) and _is_word(tokens[i + 1]):
            glue_this = glue_next = True  # ice - cream -> ice-cream
        elif set(tok) <= ATTACH_LEFT:
            glue_this = True
            if tok in SENTENCE_END:  # one mark ends a sentence; an ellipsis often does not
                capital_next = True
        elif len(tok) == 1 and tok in ATTACH_RIGHT:
            glue_next = True
        elif _is_word(tok):
            tok = _recase(tok, casing)
            if capital_next:
                tok = _capitalise(tok)
            capital_next = False
        pieces.append(tok if glue_this else " " + tok)
    return "".join(pieces)


def format_words(text: str, casing: dict[str, str] | None = None) -> str:
    """Re-space and re-case the space-separated output of the word-level tokenizer.

    No space before `. , ! ? ; :` or a closing quote, none after an opening quote; contractions joined
    (`i ' m` -> `I'm`); sentence starts and `I` capitalised; words in `casing` (lowercase -> usual form,
    e.g. `{"lily": "Lily"}`) re-cased. `<|endoftext|>` separates stories and stays on its own line.
    """
    casing = casing or {}
    parts = text.split(EOT)
    return f"\n{EOT}\n".join(_format_piece(part, casing) for part in parts)


def learn_casing(texts: Iterable[str], min_count: int = 2) -> dict[str, str]:
    """The usual casing of words that are mostly capitalised where capitals are not forced.

    Only words in the middle of a sentence are counted (not after `. ! ?` or an opening quote), so
    "Once" does not become a name while "Lily", "Tom" and "I" do.
    """
    forms: dict[str, Counter] = defaultdict(Counter)
    for text in texts:
        sentence_start = True
        in_quote = False
        for match in _WORD_RE.finditer(text):
            tok = match.group()
            if tok in SENTENCE_END:
                sentence_start = True
            elif tok in "\"“”":
                in_quote = not in_quote if tok == '"' else tok == "“"
                if in_quote:
                    sentence_start = True
            else:
                if not sentence_start:
                    word = tok.split("'")[0]
                    forms[word.lower()][word] += 1
                sentence_start = False
    casing = {}
    for lower, counter in forms.items():
        total = sum(counter.values())
        form, count = counter.most_common(1)[0]
        if form != lower and total >= min_count and count * 2 > total:
            casing[lower] = form
    return casing
