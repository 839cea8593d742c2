"""`nslm bench novelty`: how fast the novelty index embeds training stories, and what cheaper embeddings
would cost in nearest neighbours.

The speed rows embed the same training stories two ways in one run, alternating, best of `--repeats`: in
file order, 64 stories per call (the plain way, the reference), and as `NoveltyIndex.build` does (chunks
sorted by length into small batches). They give stories/s, word pieces per story and the encoder's useful
arithmetic rate (GFLOP/s, padding not counted).

With `--neighbours`, stories told by a model are searched against an index of the first training stories,
embedded at full length (the reference) and by cheaper paths: shorter inputs, a float16 copy (what the index
stores), and word TF-IDF (a lexical filter that a re-ranking would need). Each path gives how often it finds
the reference's nearest story first, and how often that story is within its first 10 or 100.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from nslm.bench.cli import _emit_json, _table
from nslm.errors import NslmError
from nslm.eval.genset import load_prompts
from nslm.eval.novelty import EMBED_BATCH, EMBED_CHUNK, embed, iter_stories, load_embedder
from nslm.generate.api import load

PLAIN_BATCH = 64  # the reference: stories in file order, this many per call
SHORTER_INPUTS = (192, 128, 64)
RECALL_AT = (10, 100)


def embed_gflop(embedder, lengths) -> float:
    """The encoder's multiply-adds x 2 for inputs of `lengths` word pieces, in GFLOP (projections, MLP and
    attention of every layer; embeddings, norms and pooling are left out)."""
    cfg = embedder[0].auto_model.config
    d, f, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    n = np.asarray(lengths, dtype=np.float64)
    return float((layers * (2 * n * (4 * d * d + 2 * d * f) + 4 * n * n * d)).sum()) / 1e9


def word_pieces(embedder, texts: list[str]) -> np.ndarray:
    """Each text's length in the embedder's word pieces (with its two special tokens), before any cut."""
    return np.array([len(ids) for ids in embedder.tokenizer(texts, verbose=False)["input_ids"]])


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _read(train, limit: int) -> list[str]:
    return [text for _, _, text in iter_stories(train, limit)]


def run(args: argparse.Namespace) -> int:
    train = Path(args.data) / "train.txt"
    if not train.is_file():
        raise NslmError(f"{args.data} has no train.txt; give --data a folder that `nslm data prepare` made.")
    texts = _read(train, args.stories)
    if not texts:
        raise NslmError(f"{train} holds no stories.")
    embedder = load_embedder()
    embed(embedder, texts[:16], EMBED_BATCH)  # warm-up: the first call allocates
    paths = {"plain": lambda: np.concatenate([embed(embedder, texts[i:i + PLAIN_BATCH], PLAIN_BATCH)
                                              for i in range(0, len(texts), PLAIN_BATCH)]),
             "index": lambda: np.concatenate([embed(embedder, texts[i:i + EMBED_CHUNK], EMBED_BATCH)
                                              for i in range(0, len(texts), EMBED_CHUNK)])}
    seconds: dict[str, list[float]] = {"plain": [], "index": []}
    vectors = {}
    for r in range(args.repeats):  # alternating, so neither path always runs first
        for name in (("plain", "index") if r % 2 == 0 else ("index", "plain")):
            vectors[name], took = _timed(paths[name])
            seconds[name].append(took)
    plain, built = vectors["plain"], vectors["index"]
    plain_s, built_s = min(seconds["plain"]), min(seconds["index"])
    pieces = word_pieces(embedder, texts)
    cut = float((pieces > embedder.max_seq_length).mean())
    gflop = embed_gflop(embedder, np.minimum(pieces, embedder.max_seq_length))
    n, difference = len(texts), float(np.abs(plain - built).max())
    rows = [[f"file order, {PLAIN_BATCH} per call (the plain way)", f"{n / plain_s:,.1f}", f"{gflop / plain_s:.1f}"],
            [f"the index's: {EMBED_CHUNK} per call, sorted by length into batches of {EMBED_BATCH}",
             f"{n / built_s:,.1f}", f"{gflop / built_s:.1f}"]]
    _table(f"embedding {n:,} training stories of {train} (all-MiniLM-L6-v2, fp32; best of {args.repeats})",
           ["path", "stories/s", "useful GFLOP/s"], rows)
    print(f"word pieces per story: {pieces.mean():.0f} on average, {cut:.0%} "
          f"cut at {embedder.max_seq_length}; {gflop / n:.2f} GFLOP per story (without padding, which the plain way\n"
          f"computes more of); largest difference between the two "
          f"paths' vectors: {difference:.1e}")
    figures = {"stories": n, "stories_per_s": round(n / built_s, 2), "reference_stories_per_s": round(n / plain_s, 2),
               "speedup": round(plain_s / built_s, 2), "word_pieces_per_story": round(float(pieces.mean()), 1),
               "cut_share": round(cut, 4),
               "gflop_per_story": round(gflop / n, 3), "gflop_per_s": round(gflop / built_s, 1),
               "max_abs_difference": difference, "repeats": args.repeats,
               "seconds": {k: [round(t, 4) for t in v] for k, v in seconds.items()}}
    if args.neighbours:
        figures["neighbours"] = _neighbours(args, train, embedder)
    _emit_json(args.json, figures)
    return 0


def _queries(args) -> list[str]:
    model = load(args.model, device="cpu")
    prompts = load_prompts()
    asked = [prompts[i % len(prompts)] for i in range(args.queries)]
    stories = model.generate_batch(asked, args.max_tokens, 0.8, seeds=list(range(args.queries)))
    return [str(s) for s in stories]


def ranks_of(reference_top: np.ndarray, sims: np.ndarray) -> np.ndarray:
    """Where each query's reference nearest story (`reference_top[q]`) ranks among `sims[q]` (0: first);
    ties count against it."""
    ref = sims[np.arange(len(sims)), reference_top][:, None]
    return (sims > ref).sum(axis=1) + (sims == ref).sum(axis=1) - 1


def _neighbours(args, train, embedder) -> dict:
    # a story twice would tie with itself and count against every path: each text once
    stories = list(dict.fromkeys(_read(train, args.index_stories)))
    queries, gen_s = _timed(lambda: _queries(args))
    print(f"{len(queries)} stories told by {args.model} in {gen_s:.0f} s")
    full_length = embedder.max_seq_length

    def dense(length):
        embedder.max_seq_length = length
        try:
            index, seconds = _timed(lambda: embed(embedder, stories, EMBED_BATCH))
            return index, embed(embedder, queries, EMBED_BATCH), seconds
        finally:
            embedder.max_seq_length = full_length

    ref_index, ref_queries, ref_s = dense(full_length)
    ref_sims = ref_queries @ ref_index.T
    ref_top = ref_sims.argmax(axis=1)
    ordered = np.sort(ref_sims, axis=1)
    margin = ordered[:, -1] - ordered[:, -2] if ordered.shape[1] > 1 else np.full(len(queries), np.inf)
    paths = {f"full length ({full_length} word pieces), the reference": (ref_sims, ref_s),
             "the same, index stored as float16 (as NoveltyIndex)":
                 (ref_queries @ ref_index.astype(np.float16).astype(np.float32).T, ref_s)}
    for length in SHORTER_INPUTS:
        if length < full_length:
            index, q, seconds = dense(length)
            paths[f"inputs cut at {length} word pieces"] = (q @ index.T, seconds)
    from sklearn.feature_extraction.text import TfidfVectorizer  # sentence-transformers' own dependency

    vectorizer = TfidfVectorizer(sublinear_tf=True)
    matrix, seconds = _timed(lambda: vectorizer.fit_transform(stories))
    paths["word TF-IDF (a lexical filter)"] = ((vectorizer.transform(queries) @ matrix.T).toarray(), seconds)
    rows, out = [], {}
    for label, (sims, seconds) in paths.items():
        ranks = ranks_of(ref_top, sims)
        row = {"stories_per_s": round(len(stories) / seconds, 1), "top1_same": round(float((ranks == 0).mean()), 4)}
        row.update({f"within_{k}": round(float((ranks < k).mean()), 4) for k in RECALL_AT})
        out[label] = row
        rows.append([label, f"{row['stories_per_s']:,.1f}", f"{row['top1_same']:.1%}",
                     *(f"{row[f'within_{k}']:.1%}" for k in RECALL_AT)])
    _table(f"nearest of {len(stories):,} training stories for {len(queries)} told stories",
           ["path", "index stories/s", "same top-1", *(f"top-1 in its first {k}" for k in RECALL_AT)], rows)
    close = float((margin < 0.01).mean())
    print(f"the reference's first and second nearest stories lie within 0.01 in cosine for {close:.0%} of the told "
          f"stories (median gap {np.median(margin):.4f})")
    return {"index_stories": len(stories), "queries": len(queries), "model": args.model,
            "gap_below_0_01": round(close, 4), "median_gap": round(float(np.median(margin)), 5), "paths": out}
