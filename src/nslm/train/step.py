"""The forward and backward pass of one training micro-batch, as `nslm train` and `nslm bench train` run it.

On a CPU the batch's windows are split into `train.batch_threads` shards, each run by its own thread on one
PyTorch thread, and their gradients summed in shard order. A 1M-parameter model's products are too small for
PyTorch's threads to share one of them well (they wait for each other); two threads that each run a whole
half-batch keep both cores busy. PyTorch lets go of Python's lock inside each operation, so the shards run
at once. Each shard's arithmetic is single-threaded and the sum's order fixed, so a run is as repeatable as
before (a resumed run still matches an uninterrupted one). Muon, AdamW and clipping then run on all threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import torch


def default_batch_threads(batch_size: int, threads: int) -> int:
    """Shards per micro-batch on a CPU: one per PyTorch thread, at most one per window."""
    return max(1, min(threads, batch_size))


def _one_thread(_=None) -> None:
    torch.set_num_threads(1)


class BatchStep:
    """Forward and backward over a micro-batch in `shards` threads (1: the plain `loss.backward()`).

    `autocast()` gives the precision context (thread-local in PyTorch, so each shard enters it itself)."""

    def __init__(self, model: torch.nn.Module, shards: int = 1, autocast=nullcontext):
        self.model = model
        self.shards = max(1, shards)
        self.autocast = autocast
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.pool = None
        if self.shards > 1:
            self.pool = ThreadPoolExecutor(self.shards - 1, thread_name_prefix="nslm-shard", initializer=_one_thread)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """Add scale x the gradient of the mean loss over (x, y) to the parameters' .grad; return that loss
        (detached)."""
        if self.pool is None or x.size(0) < 2:
            with self.autocast():
                _, loss = self.model(x, y, return_logits=False)
            (loss * scale).backward()
            return loss.detach()
        results = self.map(lambda _, xs, ys: self._shard(xs, ys, xs.size(0) / x.size(0), scale), x, y)
        for i, p in enumerate(self.params):
            grad = None
            for _, grads in results:  # in shard order, so the sum is the same every time
                if grads[i] is not None:
                    grad = grads[i] if grad is None else grad + grads[i]
            if grad is not None:
                p.grad = grad if p.grad is None else p.grad + grad
        loss = results[0][0]
        for part_loss, _ in results[1:]:
            loss = loss + part_loss
        return loss

    def _split(self, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.tensor_split(t, max(1, min(self.shards, t.size(0))))

    def map(self, fn, x: torch.Tensor, y: torch.Tensor) -> list:
        """[fn(i, x_i, y_i)] over the shards of (x, y) along the first dimension, each in its own thread on one
        PyTorch thread (fn sets its own grad mode and precision: both are per thread), in shard order."""
        xs, ys = self._split(x), self._split(y)
        if self.pool is None or len(xs) < 2:
            return [fn(0, x, y)]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            futures = [self.pool.submit(fn, i, xs[i], ys[i]) for i in range(1, len(xs))]
            return [fn(0, xs[0], ys[0])] + [f.result() for f in futures]
        finally:
            torch.set_num_threads(threads)

    def _shard(self, x, y, share: float, scale: float):
        """(this shard's loss x its share of the windows, the gradients of that x scale)."""
        with self.autocast():
            _, loss = self.model(x, y, return_logits=False)
        grads = torch.autograd.grad(loss * (share * scale), self.params, allow_unused=True)
        return loss.detach() * share, grads

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None
