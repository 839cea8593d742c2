"""Log-probabilities of token sequences under any model with the `forward(idx) -> (logits, loss)` contract.

Every likelihood-based measure (validation bits per byte, BLiMP, HellaSwag) goes through `Scorer`, so a
hand-made model (uniform logits, identical scores) tests them all. Each sequence is scored with the
end-of-story token as its first context token: the model sees what it saw at the start of a story.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Scorer:
    """Scores token sequences with `model`; `context_length` is the longest input the model accepts."""

    model: torch.nn.Module
    eot_id: int
    context_length: int
    device: str | torch.device = "cpu"
    batch_size: int = 32

    @classmethod
    def for_story_model(cls, story_model, batch_size: int = 32) -> "Scorer":
        """A scorer over a loaded `StoryModel` (`nslm.load`), with its tokenizer's end-of-story id."""
        return cls(story_model.model, story_model.tokenizer.eot_id, story_model.context_length,
                   story_model.device, batch_size)

    @torch.no_grad()
    def _logprobs_batch(self, inputs: list[list[int]], targets: list[list[int]]) -> list[np.ndarray]:
        """Log p(target[i] | input[:i+1]) for each pair; inputs are right-padded, which a causal model ignores."""
        width = max(len(x) for x in inputs)
        idx = torch.full((len(inputs), width), self.eot_id, dtype=torch.long)
        tgt = torch.zeros((len(inputs), width), dtype=torch.long)
        for row, (x, y) in enumerate(zip(inputs, targets)):
            idx[row, : len(x)] = torch.tensor(x, dtype=torch.long)
            tgt[row, : len(y)] = torch.tensor(y, dtype=torch.long)
        self.model.eval()
        logits, _ = self.model(idx.to(self.device))
        logp = F.log_softmax(logits.float(), dim=-1)
        picked = logp.gather(-1, tgt.to(logp.device).unsqueeze(-1)).squeeze(-1).cpu().numpy()
        return [picked[row, : len(y)].astype(np.float64) for row, y in enumerate(targets)]

    def token_logprobs(self, sequences: Sequence[Sequence[int]], progress=None) -> list[np.ndarray]:
        """For each sequence, the natural-log probability of each of its tokens, given EOT and the tokens before.

        A sequence longer than the context keeps its last `context_length` tokens of context for every
        prediction near its end (left truncation of the context; every token is still scored).
        Identical sequences are scored once and share the result: a model's output can move in the last
        digits with the padded width of a batch, and two copies of one sentence must still tie exactly.
        """
        first: dict[tuple[int, ...], int] = {}
        unique: list[Sequence[int]] = []
        slot = []
        for seq in sequences:
            key = tuple(int(t) for t in seq)
            if key not in first:
                first[key] = len(unique)
                unique.append(seq)
            slot.append(first[key])
        scored = self._unique_logprobs(unique, progress)
        if progress is not None:
            progress.update(len(sequences) - len(unique))
        return [scored[k] for k in slot]

    def _unique_logprobs(self, sequences: Sequence[Sequence[int]], progress=None) -> list[np.ndarray]:
        results: list[np.ndarray | None] = [None] * len(sequences)
        short, long = [], []
        for i, seq in enumerate(sequences):
            (short if len(seq) <= self.context_length else long).append(i)
        # Similar lengths together keep padding small.
        short.sort(key=lambda i: len(sequences[i]))
        for start in range(0, len(short), self.batch_size):
            chunk = short[start : start + self.batch_size]
            inputs = [[self.eot_id] + list(sequences[i][:-1]) for i in chunk]
            targets = [list(sequences[i]) for i in chunk]
            for i, lp in zip(chunk, self._logprobs_batch(inputs, targets)):
                results[i] = lp
            if progress is not None:
                progress.update(len(chunk))
        for i in long:
            results[i] = self.stream_logprobs(sequences[i])
            if progress is not None:
                progress.update(1)
        return results  # type: ignore[return-value]

    def stream_logprobs(self, tokens: Sequence[int], stride: int | None = None, progress=None) -> np.ndarray:
        """Log-probability of every token of a long stream, scored in overlapping windows.

        The stream is preceded by EOT. Windows of `context_length` inputs start every `stride` tokens
        (default half the context); each token is scored once, in the first window whose new part holds
        it, so every prediction after the first window sees at least `context_length - stride` tokens.
        """
        ctx = self.context_length
        stride = stride or max(1, ctx // 2)
        if not 0 < stride <= ctx:
            raise ValueError(f"stride must be in 1..{ctx}, got {stride}")
        full = np.concatenate([[self.eot_id], np.asarray(tokens, dtype=np.int64)])
        n = len(full) - 1
        out = np.zeros(n, dtype=np.float64)
        windows = []  # (begin, targets already scored by an earlier window, end)
        begin, scored = 0, 0
        while scored < n:
            end = min(begin + ctx, n)
            windows.append((begin, scored - begin, end))
            scored = end
            begin += stride
        for start in range(0, len(windows), self.batch_size):
            chunk = windows[start : start + self.batch_size]
            inputs = [full[b:e].tolist() for b, _, e in chunk]
            targets = [full[b + 1 : e + 1].tolist() for b, _, e in chunk]
            for (b, skip, e), lp in zip(chunk, self._logprobs_batch(inputs, targets)):
                out[b + skip : e] = lp[skip:]
            if progress is not None:
                progress.update(sum(e - b - s for b, s, e in chunk))
        return out

    def total_logprobs(self, sequences: Sequence[Sequence[int]], progress=None) -> np.ndarray:
        """Summed log-probability of each sequence (EOT as its start context)."""
        return np.array([lp.sum() for lp in self.token_logprobs(sequences, progress)], dtype=np.float64)

    def continuation_logprobs(
        self, pairs: Iterable[tuple[Sequence[int], Sequence[int]]], progress=None
    ) -> list[np.ndarray]:
        """Per-token log-probabilities of each continuation given its context (EOT + context before it).

        Contexts too long for the model lose tokens from the left; the continuation is always scored whole.
        """
        inputs, targets, lens = [], [], []
        for context, continuation in pairs:
            seq = [self.eot_id] + list(context) + list(continuation)
            keep = self.context_length + 1
            seq = seq[-keep:]
            inputs.append(seq[:-1])
            targets.append(seq[1:])
            lens.append(len(continuation))
        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
        results: list[np.ndarray | None] = [None] * len(inputs)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            out = self._logprobs_batch([inputs[i] for i in chunk], [targets[i] for i in chunk])
            for i, lp in zip(chunk, out):
                results[i] = lp[max(0, len(lp) - lens[i]) :]  # a continuation longer than the context loses its start
            if progress is not None:
                progress.update(len(chunk))
        return results  # type: ignore[return-value]
