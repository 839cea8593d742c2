"""Cross-entropy of a tied output head, computed in row chunks on the CPU.

`F.cross_entropy(features @ W.T, targets)` writes the whole [tokens, vocabulary] logits, reads them back for
the log-softmax, writes its result and, in the backward pass, a gradient of the same size: for 2,048 tokens and
4,096 entries, four 34 MB arrays, far more than a CPU's caches, and the log-softmax passes over them took 13%
of a 1M Transformer's step (README "Benchmarks"). Here each chunk of rows goes through its logits, their
softmax and its gradients (the features' and the head's) while the chunk is still in cache, in the forward
pass; the backward pass only scales what was kept. The same loss and gradients to rounding (tests/test_loss.py).
On other devices the plain expression is used (a GPU fuses it when compiled).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100
# rows per chunk: 256 x 4,096 float32 logits are 4 MB; 128 to 512 timed the same (within noise) on one thread
CHUNK_ROWS = 256


def _matmul_dtype(device_type: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype the head's products run in: autocast's where it is on (bf16 on a CPU with AMX), else `dtype`."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return dtype


def _chunk_logits(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (h @ w.T).float()


class _ChunkedHeadLoss(torch.autograd.Function):
    """Mean cross-entropy of (h @ w.T) against t; the gradients are computed chunk by chunk in the forward."""

    @staticmethod
    def forward(ctx, h, w, t, chunk):
        dt = _matmul_dtype(h.device.type, h.dtype)
        keep = t != IGNORE
        count = int(keep.sum())
        scale = 1.0 / max(count, 1)
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        with torch.autocast(h.device.type, enabled=False):
            wm = w.to(dt)
            for start in range(0, h.size(0), chunk):
                hc = h[start : start + chunk].to(dt)
                tc = t[start : start + chunk]
                kc = keep[start : start + chunk]
                rows = torch.arange(hc.size(0), device=h.device)
                cols = tc.clamp(min=0)
                probs = _chunk_logits(hc, wm)
                top = probs.amax(-1, keepdim=True)
                target = probs[rows, cols]
                probs.sub_(top).exp_()  # in place: the logits become unnormalised probabilities
                z = probs.sum(-1, keepdim=True)
                nats = top.squeeze(-1) + z.log().squeeze(-1) - target
                total += torch.where(kc, nats, 0.0).sum()
                # d(mean loss)/d(logits) = (softmax - one-hot) / count, zero on ignored rows
                probs.mul_(z.reciprocal_().mul_(scale))
                probs[rows, cols] -= scale
                if not bool(kc.all()):
                    probs[~kc] = 0.0
                pm = probs.to(dt)
                grad_h[start : start + chunk] = pm @ wm
                grad_w += (pm.T @ hc).float()
        ctx.save_for_backward(grad_h, grad_w.to(w.dtype))
        return total * scale

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out, grad_w * grad_out, None, None


def head_cross_entropy(h: torch.Tensor, w: torch.Tensor, targets: torch.Tensor, reduction: str = "mean",
                       chunk: int = CHUNK_ROWS) -> torch.Tensor:
    """Cross-entropy of the logits h @ w.T (h [..., C], w [V, C]) against `targets` (IGNORE skipped), in
    float32, "mean" over the scored tokens or "sum"; without the logits ever written whole on a CPU."""
    h = h.reshape(-1, h.size(-1))
    targets = targets.reshape(-1)
    if h.device.type != "cpu":
        logits = F.linear(h, w).float()
        return F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction=reduction)
    if torch.is_grad_enabled() and (h.requires_grad or w.requires_grad):
        mean = _ChunkedHeadLoss.apply(h, w, targets, chunk)
        return mean if reduction == "mean" else mean * int((targets != IGNORE).sum())
    dt = _matmul_dtype("cpu", h.dtype)
    total = torch.zeros((), dtype=torch.float32)
    with torch.autocast("cpu", enabled=False):
        wm = w.to(dt)
        for start in range(0, h.size(0), chunk):
            logits = _chunk_logits(h[start : start + chunk].to(dt), wm)
            total += F.cross_entropy(logits, targets[start : start + chunk], ignore_index=IGNORE, reduction="sum")
    if reduction == "sum":
        return total
    return total / (targets != IGNORE).sum().clamp(min=1)
