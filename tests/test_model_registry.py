"""A model kind is added in one place: the registry. A toy architecture registered in this file trains
with the code behind `nslm train`, tells a story through `nslm.load`, and is scored by the evaluation,
with no other code knowing its name."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import nslm
from nslm.errors import NslmError
from nslm.eval.likelihood import evaluate_likelihood
from nslm.gui.runs import describe_arch
from nslm.models import ModelConfig, TiedLM, build_model, register_arch, unregister_arch


class CountingCache:
    """The cache protocol at its smallest: `pos` counts the tokens seen, `reset()` forgets them."""

    def __init__(self):
        self.pos = 0

    def reset(self) -> None:
        self.pos = 0


class Bigram(TiedLM):
    """Each next token from the current one alone: an embedding, one mixing matrix and the tied head."""

    windowed = False  # it needs no window: its whole state is the current token

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.mix = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        nn.init.normal_(self.tok_emb.weight, std=cfg.init_std)

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        if cfg.n_layer != 1:
            raise NslmError(f"a bigram model has one layer, not model.n_layer={cfg.n_layer}")

    def new_cache(self, batch_size: int = 1) -> CountingCache:
        return CountingCache()

    def features(self, idx: torch.Tensor, cache: CountingCache | None = None) -> torch.Tensor:
        if cache is not None:
            cache.pos += idx.shape[1]
        return self.mix(self.tok_emb(idx))


@pytest.fixture
def bigram():
    register_arch("bigram")(Bigram)
    yield
    unregister_arch("bigram")


def test_a_registered_architecture_trains_generates_and_scores(bigram, tiny_run, data_dir):
    run = tiny_run("lstm-1m", 40, "model.arch=bigram", "model.context_length=32", "train.lr=0.03")
    story_model = nslm.load(run)
    assert isinstance(story_model.model, Bigram)
    vocab = story_model.config["model"]["vocab_size"]
    cached = story_model.generate("Once upon a time", max_tokens=10, temperature=0)
    plain = story_model.generate("Once upon a time", max_tokens=10, temperature=0, use_cache=False)
    assert cached.text == plain.text and cached.text.startswith("Once upon a time") and cached.n_tokens >= 1
    scored = evaluate_likelihood(story_model, data_dir, max_tokens=3000)
    assert scored["loss"] < math.log(vocab) - 1  # far better than guessing: it learnt which token follows which
    assert describe_arch(story_model.config["model"]) == "bigram 1L d32"
    params = build_model(ModelConfig.from_dict(story_model.config["model"])).param_counts()
    assert params == {"total": vocab * 32 + 32 * 32, "embedding": vocab * 32, "non_embedding": 32 * 32}


def test_its_own_checks_and_an_unknown_name(bigram):
    with pytest.raises(NslmError, match="a bigram model has one layer"):
        ModelConfig(arch="bigram", n_layer=2).validate()
    with pytest.raises(NslmError, match=r"^model.arch must be one of transformer, lstm, gru, bigram, not 'trigram'$"):
        ModelConfig(arch="trigram").validate()
    with pytest.raises(ValueError, match="already registered"):
        register_arch("lstm")(Bigram)
