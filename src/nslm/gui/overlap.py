"""Show, word by word, which n-grams a generated story shares with its closest training story.

Both texts are split into words and the punctuation between them; every word that belongs to an
n-gram (default 4 words, case-insensitive) found in the other text is wrapped in `<mark>`. All text is
HTML-escaped, so a story can never inject markup into the page.
"""

from __future__ import annotations

import html
import re

WORD = re.compile(r"[A-Za-z0-9']+")


def _words(text: str) -> list[re.Match]:
    return list(WORD.finditer(text))


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """The set of lower-cased word n-grams of `text`."""
    words = [m.group().lower() for m in _words(text)]
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def shared_ngram_share(story: str, other: str, n: int = 4) -> float:
    """Share of `story`'s word n-grams that also occur in `other` (0 when the story is shorter than n)."""
    mine = ngrams(story, n)
    return len(mine & ngrams(other, n)) / len(mine) if mine else 0.0


def mark_shared(text: str, other: str, n: int = 4) -> str:
    """`text` as escaped HTML with the words of n-grams it shares with `other` inside `<mark>`."""
    matches = _words(text)
    words = [m.group().lower() for m in matches]
    common = ngrams(other, n)
    marked = [False] * len(words)
    for i in range(len(words) - n + 1):
        if tuple(words[i:i + n]) in common:
            marked[i:i + n] = [True] * n
    out, pos, open_mark = [], 0, False
    for i, match in enumerate(matches):
        gap = html.escape(text[pos:match.start()])
        if open_mark and not marked[i]:
            out.append("</mark>")
            open_mark = False
        out.append(gap)
        if marked[i] and not open_mark:
            out.append("<mark>")
            open_mark = True
        out.append(html.escape(match.group()))
        pos = match.end()
    if open_mark:
        out.append("</mark>")
    out.append(html.escape(text[pos:]))
    return "".join(out).replace("\n", "<br>")
