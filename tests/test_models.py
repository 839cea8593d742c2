"""Models: preset sizes, config checks, shapes, and that the KV cache / carried state change nothing."""

from __future__ import annotations

import pytest
import torch

from nslm.errors import NslmError
from nslm.sampling import filter_logits, generate_batch_ids, generate_ids
from nslm.models import ModelConfig, build_model, list_presets, load_preset


@pytest.mark.parametrize("name", ["transformer-1m", "lstm-1m", "gru-1m"])
def test_one_million_presets_have_about_a_million_parameters(name):
    cfg = load_preset(name)
    assert cfg.vocab_size == 4096
    counts = build_model(cfg).param_counts()
    assert 0.85e6 <= counts["total"] <= 1.15e6, counts
    assert counts["embedding"] == 4096 * cfg.d_model
    assert counts["embedding"] + counts["non_embedding"] == counts["total"]


def test_presets_include_larger_models_for_comparison():
    names = list_presets()
    assert {"transformer-1m", "lstm-1m", "gru-1m", "transformer-4m"} <= set(names)
    assert build_model(load_preset("transformer-4m")).param_counts()["total"] > 3.5e6


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(NslmError, match="transformer-1m"):
        load_preset("transformer-1b")


@pytest.mark.parametrize("change, words", [
    ({"context_length": 0}, "context_length"),
    ({"n_head": 3}, "divide"),
    ({"dropout": -0.1}, "dropout"),
    ({"dropout": 1.0}, "dropout"),
    ({"vocab_size": 1}, "vocab_size"),
    ({"d_model": -8}, "d_model"),
    ({"pos_encoding": "alibi"}, "pos_encoding"),
    ({"arch": "mamba"}, "arch"),
    ({"mlp": "relu"}, "mlp"),
    ({"rnn_hidden": -1, "arch": "lstm"}, "rnn_hidden"),
    ({"n_layers": 3}, "unknown model setting"),
    ({"d_model": 4096, "n_layer": 48, "d_ff": 16384, "n_head": 32}, "makes 12,902,076,416 parameters, more than nslm's limit"),
    ({"d_ff": 10**9}, "limit of 1,000,000,000"),
    ({"vocab_size": 10**12}, "limit of 1,000,000,000"),
])
def test_absurd_configs_are_refused_with_one_sentence(change, words):
    d = load_preset("transformer-1m").to_dict()
    d.update(change)
    with pytest.raises(NslmError, match=words):
        ModelConfig.from_dict(d)


@pytest.mark.parametrize("name", ["transformer-1m", "lstm-1m", "gru-1m"])
@pytest.mark.parametrize("change", [{}, {"bias": True}, {"norm": "layernorm", "bias": True}, {"pos_encoding": "learned"},
                                    {"mlp": "swiglu", "bias": True}, {"rnn_hidden": 96, "n_layer": 3}])
def test_parameter_count_without_building_equals_the_built_model(name, change):
    cfg = ModelConfig.from_dict({**load_preset(name).to_dict(), **change})
    assert cfg.param_counts() == build_model(cfg).param_counts()


def small(arch: str, **kw) -> ModelConfig:
    base = dict(arch=arch, vocab_size=97, context_length=24, d_model=32, n_layer=2, n_head=4, d_ff=64)
    base.update(kw)
    return ModelConfig.from_dict(base)


CONFIGS = [small("transformer", pos_encoding=p, norm=n) for p in ("learned", "sinusoidal", "rope")
           for n in ("rmsnorm", "layernorm")] + [small("transformer", mlp="swiglu"), small("lstm"), small("gru"), small("lstm", rnn_hidden=48)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.arch}-{c.pos_encoding}-{c.norm}-{c.mlp}-{c.rnn_hidden}")
def test_forward_features_and_loss(cfg):
    torch.manual_seed(0)
    model = build_model(cfg)
    idx = torch.randint(0, cfg.vocab_size, (3, 10))
    logits, loss = model(idx, torch.randint(0, cfg.vocab_size, (3, 10)))
    assert logits.shape == (3, 10, cfg.vocab_size)
    # a fresh model predicts about uniformly: loss close to ln(V)
    assert abs(loss.item() - torch.log(torch.tensor(97.0)).item()) < 0.5
    assert model(idx)[1] is None
    assert model.features(idx).shape == (3, 10, cfg.d_model)
    # tied: the output head is the token embedding, so no separate head weight exists
    assert not any("head" in name for name, _ in model.named_parameters())


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.arch}-{c.pos_encoding}-{c.norm}-{c.mlp}-{c.rnn_hidden}")
def test_cache_gives_the_same_logits_as_a_full_pass(cfg):
    torch.manual_seed(1)
    model = build_model(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (2, 20))
    full, _ = model(idx)
    cache = model.new_cache(2)
    parts = [model(idx[:, :7], cache=cache)[0]]  # a prefill of several tokens, then one at a time
    parts += [model(idx[:, t : t + 1], cache=cache)[0] for t in range(7, 20)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cfg", [c for c in CONFIGS if c.arch == "transformer"] + [small("transformer", bias=True)],
                         ids=lambda c: f"{c.pos_encoding}-{c.norm}-{c.mlp}-bias{c.bias}")
def test_the_decoding_step_is_bitwise_the_module_forward(cfg):
    # eval mode takes the one-token decoding step; train mode (dropout 0) the blocks' own forward
    torch.manual_seed(4)
    model = build_model(cfg)
    idx = torch.randint(0, cfg.vocab_size, (3, 12))
    outputs = []
    for train_mode in (False, True):
        model.train(train_mode)
        cache = model.new_cache(3)
        with torch.no_grad():
            model(idx[:, :5], cache=cache)
            outputs.append(torch.cat([model(idx[:, t : t + 1], cache=cache)[0] for t in range(5, 12)], dim=1))
        assert cache.pos == 12
    assert torch.equal(outputs[0], outputs[1])


@pytest.mark.parametrize("cfg", [small("transformer", pos_encoding="rope"), small("transformer", pos_encoding="learned"),
                                 small("lstm"), small("gru")], ids=lambda c: f"{c.arch}-{c.pos_encoding}")
def test_greedy_tokens_with_and_without_cache_are_identical(cfg):
    torch.manual_seed(2)
    model = build_model(cfg).eval()
    # 60 new tokens run well past the 24-token window, so the window slides several times
    cached = list(generate_ids(model, [5, 6, 7], 60, stop_id=None, temperature=0, use_cache=True))
    plain = list(generate_ids(model, [5, 6, 7], 60, stop_id=None, temperature=0, use_cache=False))
    assert len(cached) == 60
    assert cached == plain


@pytest.mark.parametrize("cfg", [small("transformer", pos_encoding="rope"), small("transformer", pos_encoding="learned"),
                                 small("transformer", pos_encoding="sinusoidal", norm="layernorm"), small("lstm"), small("gru")],
                         ids=lambda c: f"{c.arch}-{c.pos_encoding}")
@pytest.mark.parametrize("temperature", [0, 1.0])
def test_a_batch_decodes_the_same_ids_as_one_prompt_at_a_time(cfg, temperature):
    torch.manual_seed(5)
    model = build_model(cfg).eval()
    # lengths 1 to 30 (past the 24-token window), 60 new tokens (the windows slide), rows that stop early
    prompts = [[5, 6, 7], [1], [9] * 30, list(range(3, 11)), [11, 12]]
    seeds = [1, 2, 3, 4, 5]
    alone = [list(generate_ids(model, p, 60, stop_id=13, temperature=temperature, seed=s)) for p, s in zip(prompts, seeds)]
    batch = generate_batch_ids(model, prompts, 60, stop_id=13, temperature=temperature, seeds=seeds)
    assert batch == alone
    if temperature:
        assert len({len(ids) for ids in alone}) > 2  # the rows did end at different steps
    assert generate_batch_ids(model, [[4]], 0) == [[]]


def test_sampling_is_repeatable_with_a_seed_and_stops_at_the_stop_token():
    torch.manual_seed(3)
    model = build_model(small("transformer")).eval()
    a = list(generate_ids(model, [1], 30, temperature=1.0, seed=7))
    b = list(generate_ids(model, [1], 30, temperature=1.0, seed=7))
    assert a == b
    stop = a[5]
    c = list(generate_ids(model, [1], 30, stop_id=stop, temperature=1.0, seed=7))
    assert c == a[: a.index(stop)]


def test_top_k_and_top_p_keep_only_the_likely_tokens():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [True, True, False, False]
    assert torch.isfinite(filter_logits(logits, top_p=0.7)).tolist() == [True, True, False, False]
    assert torch.isfinite(filter_logits(logits, top_p=0.85)).tolist() == [True, True, True, False]
    assert torch.isfinite(filter_logits(logits, top_p=0.4)).tolist() == [True, False, False, False]


def test_swiglu_mlp_has_a_gate_and_the_gelu_mlp_keeps_its_old_weight_names():
    gated = build_model(small("transformer", mlp="swiglu"))
    plain = build_model(small("transformer"))
    names = {n for n, _ in gated.named_parameters()}
    assert {"blocks.0.mlp.gate.weight", "blocks.0.mlp.up.weight", "blocks.0.mlp.down.weight"} <= names
    assert not any("gate" in n for n, _ in plain.named_parameters())
    # three d_model x d_ff matrices instead of two
    assert gated.param_counts()["non_embedding"] - plain.param_counts()["non_embedding"] == 2 * 32 * 64


def test_position_tables_start_at_the_size_of_the_token_embeddings():
    """Sinusoidal positions are scaled to the init std, as a learned table starts: the bare +-1 table was about
    35 times the token embeddings and drowned them (the study's positional question found it)."""
    for pos in ("sinusoidal", "learned"):
        torch.manual_seed(0)
        model = build_model(small("transformer", pos_encoding=pos))
        table = model.pos_table if pos == "sinusoidal" else model.pos_emb.weight.detach()
        rms = float(table.pow(2).mean().sqrt())
        tokens = float(model.tok_emb.weight.detach().pow(2).mean().sqrt())
        assert abs(rms / model.cfg.init_std - 1) < 0.1 and abs(rms / tokens - 1) < 0.1


@pytest.mark.parametrize("shipped, preset", [("tinystories-transformer-1m", "transformer-1m-long"),
                                             ("tinystories-gru-1m", "gru-1m-long")])
def test_each_shipped_model_is_its_recipe_preset(shipped, preset):
    """The shipped models' recipes are presets: the model section of each shipped config is its preset."""
    import json

    from nslm.generate.api import pretrained_root

    shipped_model = json.loads((pretrained_root() / shipped / "config.json").read_text())["model"]
    assert ModelConfig.from_dict(shipped_model) == load_preset(preset)


def test_a_batchs_sampling_draws_what_multinomial_draws_row_by_row():
    from nslm.sampling import next_tokens

    torch.manual_seed(6)
    for temperature in (0.5, 0.8, 1.3):
        logits = torch.randn(16, 300) * 3
        seeds = list(range(100, 116))
        gens_a = [torch.Generator().manual_seed(s) for s in seeds]
        gens_b = [torch.Generator().manual_seed(s) for s in seeds]
        probs = torch.softmax(logits / temperature, dim=-1)
        for _ in range(30):  # the generators advance together: every draw of the stream is the same
            expected = [int(torch.multinomial(row, 1, generator=g)) for row, g in zip(probs, gens_a)]
            assert next_tokens(logits, temperature, None, None, gens_b) == expected
