"""What every nslm model shares: a tied output head over `features()`, and its parameter split."""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F


class TiedLM(nn.Module):
    """Base class: subclasses define `tok_emb` and `features(idx, cache)`; the head is the embedding."""

    def forward(self, idx, targets=None, cache=None):
        """Logits [B, T, V] and the mean cross-entropy against `targets` (or None)."""
        logits = F.linear(self.features(idx, cache), self.tok_emb.weight)  # tied output head
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def embedding_params(self) -> int:
        """Parameters that are lookup tables (token, and learned position, embeddings)."""
        return self.tok_emb.weight.numel()

    def param_counts(self) -> dict:
        total = sum(p.numel() for p in self.parameters())
        embedding = self.embedding_params()
        return {"total": total, "embedding": embedding, "non_embedding": total - embedding}
