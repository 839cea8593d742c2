"""Random training windows and fixed validation windows read straight from a data folder's token files.

The token files are memory-mapped (`nslm.data.DataFolder`), never loaded whole. Each batch is drawn with a generator seeded by
(seed, rank, step, micro-step), so the data position is simply the step and a resume draws exactly
the batches the uninterrupted run would have drawn.
"""

from __future__ import annotations

import numpy as np
import torch

from nslm.errors import NslmError

def batch_generator(seed: int, rank: int, step: int, micro: int) -> torch.Generator:
    """The generator for one micro-batch; a stable mix of its coordinates."""
    mixed = (seed * 1_000_003 + rank * 7_919 + step * 104_729 + micro * 31) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def random_batch(tokens: np.ndarray, batch_size: int, context: int, gen: torch.Generator):
    """Inputs and targets [batch_size, context] from random windows of `tokens` (LongTensors)."""
    n = len(tokens)
    if n < context + 1:
        raise NslmError(f"the training split has {n} tokens, fewer than one window of {context + 1}; lower model.context_length")
    starts = torch.randint(0, n - context, (batch_size,), generator=gen).numpy()
    # one fancy-indexed read of all windows (the same values a loop of slices gives, without a Python loop
    # per window, which costs milliseconds per step at the batch sizes a GPU wants)
    block = torch.from_numpy(np.asarray(tokens[starts[:, None] + np.arange(context + 1)], dtype=np.int64))
    return block[:, :-1], block[:, 1:]


def validation_windows(tokens: np.ndarray, context: int, max_tokens: int, seed: int = 0):
    """Windows covering the whole split (each token predicted once), or, for a split larger than
    `max_tokens`, a fixed seeded sample of windows. Returns (inputs [N, T], targets [N, T] with -100
    for padding, estimated: bool)."""
    n = len(tokens)
    if n < 2:
        raise NslmError("the validation split has fewer than 2 tokens; prepare the data with more validation stories")
    estimated = n - 1 > max_tokens
    if estimated:
        count = max(1, max_tokens // context)
        gen = torch.Generator().manual_seed(seed)
        starts = torch.randint(0, max(1, n - context), (count,), generator=gen).tolist()
    else:
        starts = list(range(0, n - 1, context))
    xs, ys = [], []
    for s in starts:
        chunk = np.asarray(tokens[s : s + context + 1], dtype=np.int64)
        x = np.zeros(context, dtype=np.int64)
        y = np.full(context, -100, dtype=np.int64)
        x[: len(chunk) - 1] = chunk[:-1]
        y[: len(chunk) - 1] = chunk[1:]
        xs.append(x)
        ys.append(y)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)), estimated
