"""What every nslm model shares: a tied output head over `features()`, its parameter split, and the
defaults of what training, sampling and the GUI ask of a model class (docs/ARCHITECTURE.md, "Adding a
model kind")."""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from nslm.models.loss import head_cross_entropy


class TiedLM(nn.Module):
    """Base class: subclasses define `tok_emb`, `features(idx, cache)` and `new_cache(batch_size)`; the
    head is the embedding. A cache has `pos` (tokens it holds) and `reset()`; `features` advances it."""

    # True: the model sees at most cfg.context_length tokens, so sampling slides a window over long
    # stories (a Transformer); False: it carries a state of any length (an RNN)
    windowed = True

    @classmethod
    def check_config(cls, cfg) -> None:
        """Raise NslmError for a setting this architecture cannot build (ModelConfig checks the shared ones)."""

    @classmethod
    def describe(cls, cfg) -> str:
        """A few words for tables, e.g. 'transformer 4L d128 rope'."""
        return f"{cfg.arch} {cfg.n_layer}L d{cfg.d_model}"

    def forward(self, idx, targets=None, cache=None, return_logits: bool = True):
        """Logits [B, T, V] and the mean cross-entropy against `targets` (or None). With targets and
        return_logits=False (what training asks for), the logits are None and the loss is computed chunk by
        chunk without them (`nslm.models.loss`)."""
        h = self.features(idx, cache)
        if targets is not None and not return_logits:
            return None, head_cross_entropy(h, self.tok_emb.weight, targets)
        logits = F.linear(h, self.tok_emb.weight)  # tied output head
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    # the decoder class of `nslm.models.decode` that runs this kind of model on the CPU, or None
    numpy_decoder_class = None

    def numpy_decoder(self):
        """A decoder of this model's current weights (`nslm.models.decode`) with an empty cache of its own where
        it has one, else None: what generation on the CPU uses instead of the cached forward.

        Building one folds and packs every weight (milliseconds); the result is kept and shared by the decoders
        given out while the parameters stay the same tensors at the same version (an optimizer step, a loaded
        state dict or a move to another device or dtype changes that), so a story does not pay it again."""
        cls = self.numpy_decoder_class
        if cls is None or not cls.supports(self):
            return None
        try:
            key = tuple((p.data_ptr(), p._version) for p in self.parameters())
        except RuntimeError:  # inference tensors keep no version: build one each time
            return cls(self)
        cached = self.__dict__.get("_decoder_cache")
        if cached is None or cached[0] != key:
            cached = (key, cls(self))
            self.__dict__["_decoder_cache"] = cached  # not a submodule or parameter: past nn.Module's __setattr__
        return cached[1].fresh()

    def embedding_params(self) -> int:
        """Parameters that are lookup tables (token, and learned position, embeddings)."""
        return self.tok_emb.weight.numel()

    def param_counts(self) -> dict:
        """{"total", "embedding", "non_embedding"} parameter counts."""
        total = sum(p.numel() for p in self.parameters())
        embedding = self.embedding_params()
        return {"total": total, "embedding": embedding, "non_embedding": total - embedding}
