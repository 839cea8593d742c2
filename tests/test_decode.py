"""The NumPy decoding step: the model's logits for every Transformer layout, the same stories as PyTorch."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import nslm
from nslm.errors import NslmError
from nslm.models import ModelConfig, build_model
from nslm.models.decode import NumpyDecoder, gelu
from nslm.sampling import generate_batch_ids, generate_ids, numpy_decoder

LAYOUTS = list(itertools.product(("learned", "sinusoidal", "rope"), ("rmsnorm", "layernorm"), ("gelu", "swiglu"), (False, True)))


def transformer(pos="rope", norm="rmsnorm", mlp="swiglu", bias=False, seed=0, jitter=0.3):
    cfg = ModelConfig.from_dict(dict(arch="transformer", vocab_size=97, context_length=24, d_model=32, n_layer=2,
                                     n_head=4, d_ff=64, pos_encoding=pos, norm=norm, mlp=mlp, bias=bias))
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    with torch.no_grad():  # weights far from their init, so every norm weight, bias and gate matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * jitter)
    return model


@pytest.mark.parametrize("pos, norm, mlp, bias", LAYOUTS, ids=lambda v: str(v))
def test_the_numpy_step_gives_the_models_logits(pos, norm, mlp, bias):
    model = transformer(pos, norm, mlp, bias)
    idx = torch.randint(0, 97, (1, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(idx)[0][0].numpy()
    decoder = NumpyDecoder(model)
    # a prompt of several tokens at once, then one token at a time to the end of the window
    got = [decoder.feed(idx[0, :9].tolist())] + [decoder.feed([t]) for t in idx[0, 9:].tolist()]
    np.testing.assert_allclose(np.stack(got), expected[8:], atol=1e-4, rtol=1e-4)
    assert decoder.pos == 24
    with pytest.raises(ValueError, match="exceed the context length"):
        decoder.feed([1])
    decoder.reset()
    np.testing.assert_allclose(decoder.feed(idx[0, :3].tolist()), expected[2], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("pos, mlp", [("rope", "swiglu"), ("learned", "gelu"), ("sinusoidal", "swiglu")])
@pytest.mark.parametrize("temperature", [0, 1.0])
def test_the_numpy_step_tells_the_stories_pytorch_tells(pos, mlp, temperature):
    model = transformer(pos, mlp=mlp, jitter=0.5)
    # 60 new tokens slide the 24-token window several times; a stop id ends some runs early
    for prompt, seed in (([5, 6, 7], 1), ([1], 2), ([9] * 30, 3)):
        fast = list(generate_ids(model, prompt, 60, stop_id=13, temperature=temperature, seed=seed, engine="numpy"))
        plain = list(generate_ids(model, prompt, 60, stop_id=13, temperature=temperature, seed=seed, engine="torch"))
        assert fast == plain
        assert fast == list(generate_ids(model, prompt, 60, stop_id=13, temperature=temperature, seed=seed))  # "auto"
        if temperature == 0:
            assert fast == list(generate_ids(model, prompt, 60, stop_id=13, temperature=0, use_cache=False))


def test_the_shipped_transformer_tells_the_same_stories_with_the_numpy_step():
    story_model = nslm.load("tinystories-transformer-1m")
    model = story_model.model
    assert numpy_decoder(model) is not None
    for text, temperature, seed in (("Once upon a time, there was a little dog", 0, None),
                                    ("Tom and Sue went to the park", 0.8, 7)):
        prompt = story_model.encode_prompt(text)[0]
        fast = list(generate_ids(model, prompt, 120, stop_id=None, temperature=temperature, seed=seed, engine="numpy"))
        plain = list(generate_ids(model, prompt, 120, stop_id=None, temperature=temperature, seed=seed, engine="torch"))
        assert fast == plain


def test_which_models_the_numpy_step_runs():
    assert NumpyDecoder.supports(transformer())
    assert not NumpyDecoder.supports(transformer().train())  # dropout and training are PyTorch's
    assert not NumpyDecoder.supports(transformer().to(torch.bfloat16))
    gru = build_model(ModelConfig.from_dict(dict(arch="gru", vocab_size=97, context_length=24, d_model=32, n_layer=1)))
    assert not NumpyDecoder.supports(gru.eval())
    assert numpy_decoder(gru.eval()) is None and numpy_decoder(transformer(), "torch") is None
    with pytest.raises(NslmError, match="NumPy decoding step"):
        numpy_decoder(gru.eval(), "numpy")
    with pytest.raises(ValueError, match="engine must be one of auto, torch, numpy"):
        list(generate_ids(transformer(), [1], 3, engine="fastest"))
    # an RNN and the uncached loop are unchanged by the engine
    assert list(generate_ids(gru.eval(), [1, 2], 10, temperature=0)) == list(generate_ids(gru.eval(), [1, 2], 10, temperature=0, engine="torch"))


def test_a_batch_is_told_as_the_numpy_step_tells_it_one_by_one():
    model = transformer(jitter=0.5)
    prompts, seeds = [[5, 6, 7], [1], [9] * 30], [1, 2, 3]
    alone = [list(generate_ids(model, p, 40, stop_id=13, temperature=1.0, seed=s)) for p, s in zip(prompts, seeds)]
    assert generate_batch_ids(model, prompts, 40, stop_id=13, temperature=1.0, seeds=seeds) == alone


def test_the_erf_gelu_is_torchs_to_float32_rounding():
    x = np.linspace(-10, 10, 20001, dtype=np.float32)
    expected = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    assert np.abs(gelu(x) - expected).max() < 2e-6
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow at the extremes
        assert np.isfinite(gelu(np.array([-1e30, -100.0, 100.0, 1e30], dtype=np.float32))).all()


def test_the_gated_mlp_has_no_overflow_for_huge_gates():
    model = transformer(jitter=0.0)
    with torch.no_grad():
        model.blocks[0].mlp.gate.weight.mul_(1e6)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        logits = NumpyDecoder(model).feed([1, 2, 3])
    with torch.no_grad():
        expected = model(torch.tensor([[1, 2, 3]]))[0][0, -1].numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-3, rtol=1e-3)


# a stop id that these models, sampling, emit at different steps in different rows
@pytest.mark.parametrize("pos, norm, mlp, stop", [("rope", "rmsnorm", "swiglu", 4), ("learned", "layernorm", "gelu", 1)])
@pytest.mark.parametrize("temperature", [0, 1.0])
def test_the_numpy_batch_step_tells_each_rows_story(pos, norm, mlp, stop, temperature):
    model = transformer(pos, norm, mlp, jitter=0.5)
    # lengths 1 to 30 (past the 24-token window): rows refill their windows and stop at different steps
    prompts = [[5, 6, 7], [1], [9] * 30, list(range(3, 11)), [11, 12]]
    seeds = [1, 2, 3, 4, 5]
    alone = [list(generate_ids(model, p, 60, stop_id=stop, temperature=temperature, seed=s, engine="torch"))
             for p, s in zip(prompts, seeds)]
    assert generate_batch_ids(model, prompts, 60, stop_id=stop, temperature=temperature, seeds=seeds, engine="numpy") == alone
    assert generate_batch_ids(model, prompts, 60, stop_id=stop, temperature=temperature, seeds=seeds, engine="torch") == alone
    if temperature:
        assert len({len(ids) for ids in alone}) > 2


def test_the_numpy_batch_step_gives_each_rows_logits():
    from nslm.models.decode import NumpyBatchDecoder

    model = transformer("rope", "layernorm", "swiglu", bias=True)
    decoder = NumpyDecoder(model)
    prompts = [[4, 5, 6, 7, 8], [9], [10, 11, 12]]
    rows = []
    for prompt in prompts:
        row = decoder.fresh()
        row.feed(prompt)
        rows.append(row)
    batch = NumpyBatchDecoder(rows)
    logits = batch.step([20, 21, 22])
    for prompt, token, got in zip(prompts, [20, 21, 22], logits):
        with torch.no_grad():
            expected = model(torch.tensor([prompt + [token]]))[0][0, -1].numpy()
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert batch.pos.tolist() == [6, 2, 4] and decoder.pos == 0  # fresh rows leave the source decoder alone
    kept = batch.keep([2, 0]).step([30, 31])
    with torch.no_grad():
        expected = model(torch.tensor([prompts[0] + [20, 31]]))[0][0, -1].numpy()
    np.testing.assert_allclose(kept[1], expected, atol=1e-4, rtol=1e-4)
