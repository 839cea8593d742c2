"""Show, word by word, which n-grams a generated story shares with its closest training story.

Words and n-grams are the evaluation's own (`nslm.eval.novelty.words` / `ngram_hashes`), so the share
shown on the page is counted the way the report counts it. Every word that belongs to an n-gram found
in the other text is wrapped in `<mark>`; all text is HTML-escaped (element text only, so quotes stay as they are), so a story can never inject markup.
"""

from __future__ import annotations

import html

import numpy as np

from nslm.eval.novelty import ngram_hashes, word_spans


def shared_ngram_share(story: str, other: str, n: int = 4) -> float:
    """Share of `story`'s word n-grams that also occur in `other` (0 when the story is shorter than n)."""
    mine = ngram_hashes(story, n)
    return float(np.isin(mine, ngram_hashes(other, n)).mean()) if len(mine) else 0.0


def _marked_words(text: str, other: str, n: int) -> list[bool]:
    """For each word of `text`: does it belong to an n-gram that `other` also has?"""
    hashes = ngram_hashes(text, n)
    marked = [False] * len(word_spans(text))
    for i in np.flatnonzero(np.isin(hashes, ngram_hashes(other, n))):
        marked[i:i + n] = [True] * n
    return marked


def mark_shared(text: str, other: str, n: int = 4) -> str:
    """`text` as escaped HTML with the words of n-grams it shares with `other` inside `<mark>`."""
    out, pos, open_mark = [], 0, False
    for (start, end), marked in zip(word_spans(text), _marked_words(text, other, n)):
        if open_mark and not marked:
            out.append("</mark>")
            open_mark = False
        out.append(html.escape(text[pos:start], quote=False))
        if marked and not open_mark:
            out.append("<mark>")
            open_mark = True
        out.append(html.escape(text[start:end], quote=False))
        pos = end
    if open_mark:
        out.append("</mark>")
    out.append(html.escape(text[pos:], quote=False))
    return "".join(out).replace("\n", "<br>")
