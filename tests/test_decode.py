"""The NumPy and C decoding steps: the model's logits for every Transformer layout, the same stories as PyTorch."""

from __future__ import annotations

import itertools
import shutil
import sysconfig
import threading

import numpy as np
import pytest
import torch

import nslm
from nslm.errors import NslmError
from nslm.models import ModelConfig, build_model
from nslm.models.decode import NumpyDecoder, NumpyRNNDecoder, c_library
from nslm.sampling import generate_batch_ids, generate_ids, numpy_decoder

LAYOUTS = list(itertools.product(("learned", "sinusoidal", "rope"), ("rmsnorm", "layernorm"), ("gelu", "swiglu"), (False, True)))
# the Transformer's one-token step: in NumPy, or compiled (skipped only where no C compiler built it; a test
# below fails where one was there and the step is missing)
needs_c = pytest.mark.skipif(c_library() is None, reason="the C step was not built (no C compiler at install)")
STEPS = ["numpy", pytest.param("c", marks=needs_c)]


def decoder_for(model, step: str) -> NumpyDecoder:
    decoder = NumpyDecoder(model)
    assert decoder.use_c(step == "c") == (step == "c")
    return decoder


def jittered(seed=0, jitter=0.3, **shape):
    """A small model in eval mode whose weights are far from their init, so every norm weight, bias and gate
    matters."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig.from_dict(dict(vocab_size=97, context_length=24, d_model=32, **shape))).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * jitter)
    return model


def transformer(pos="rope", norm="rmsnorm", mlp="swiglu", bias=False, seed=0, jitter=0.3):
    return jittered(seed, jitter, arch="transformer", n_layer=2, n_head=4, d_ff=64, pos_encoding=pos, norm=norm,
                    mlp=mlp, bias=bias)


def rnn(arch="gru", hidden=48, layers=2, seed=0, jitter=0.3):
    return jittered(seed, jitter, arch=arch, n_layer=layers, rnn_hidden=hidden)


def assert_decodes_the_models_logits(model, decoder, length: int):
    """A prompt of 9 ids at once, then one id at a time to `length`: the logits of one full pass. Returns
    the ids and the full pass's logits."""
    idx = torch.randint(0, 97, (1, length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(idx)[0][0].numpy()
    got = [decoder.feed(idx[0, :9].tolist())] + [decoder.feed([t]) for t in idx[0, 9:].tolist()]
    np.testing.assert_allclose(np.stack(got), expected[8:], atol=1e-4, rtol=1e-4)
    assert decoder.pos == length
    return idx, expected


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("pos, norm, mlp, bias", LAYOUTS, ids=lambda v: str(v))
def test_the_step_gives_the_models_logits(pos, norm, mlp, bias, step):
    model = transformer(pos, norm, mlp, bias)
    decoder = decoder_for(model, step)
    idx, expected = assert_decodes_the_models_logits(model, decoder, 24)  # to the end of the window
    with pytest.raises(ValueError, match="exceed the context length"):
        decoder.feed([1])
    decoder.reset()
    np.testing.assert_allclose(decoder.feed(idx[0, :3].tolist()), expected[2], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("pos, mlp", [("rope", "swiglu"), ("learned", "gelu"), ("sinusoidal", "swiglu")])
@pytest.mark.parametrize("temperature", [0, 1.0])
def test_the_step_tells_the_stories_pytorch_tells(pos, mlp, temperature, step):
    model = transformer(pos, mlp=mlp, jitter=0.5)
    # 60 new tokens slide the 24-token window several times; a stop id ends some runs early
    for prompt, seed in (([5, 6, 7], 1), ([1], 2), ([9] * 30, 3)):
        fast = list(generate_ids(model, prompt, 60, stop_id=13, temperature=temperature, seed=seed, engine=step))
        plain = list(generate_ids(model, prompt, 60, stop_id=13, temperature=temperature, seed=seed, engine="torch"))
        assert fast == plain
        assert fast == list(generate_ids(model, prompt, 60, stop_id=13, temperature=temperature, seed=seed))  # "auto"
        if temperature == 0:
            assert fast == list(generate_ids(model, prompt, 60, stop_id=13, temperature=0, use_cache=False))
        else:  # with top-k and top-p, where the draw is not made ahead
            for top_k, top_p in ((5, None), (None, 0.9), (40, 0.95)):
                assert (list(generate_ids(model, prompt, 40, 13, temperature, top_k, top_p, seed, engine=step))
                        == list(generate_ids(model, prompt, 40, 13, temperature, top_k, top_p, seed, engine="torch")))


@pytest.mark.parametrize("step", STEPS)
def test_the_shipped_transformer_tells_the_same_stories_with_the_step(step):
    story_model = nslm.load("tinystories-transformer-1m")
    model = story_model.model
    assert numpy_decoder(model, step) is not None
    for text, temperature, seed in (("Once upon a time, there was a little dog", 0, None),
                                    ("Tom and Sue went to the park", 0.8, 7)):
        prompt = story_model.encode_prompt(text)[0]
        fast = list(generate_ids(model, prompt, 120, stop_id=None, temperature=temperature, seed=seed, engine=step))
        plain = list(generate_ids(model, prompt, 120, stop_id=None, temperature=temperature, seed=seed, engine="torch"))
        assert fast == plain


def test_the_c_step_is_built_where_a_c_compiler_is():
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}) here: nslm decodes with NumPy")
    assert c_library() is not None, "a C compiler is here but nslm.models._cstep is missing: pip install -e . again"


@needs_c
@pytest.mark.parametrize("pos, norm, mlp, bias", [("rope", "rmsnorm", "swiglu", False), ("learned", "layernorm", "gelu", True)])
def test_the_c_step_decodes_rows_at_their_own_positions(pos, norm, mlp, bias):
    model = transformer(pos, norm, mlp, bias)
    numpy_rows, c_rows = [], []
    for i, prompt in enumerate(([3, 4, 5, 6, 7], [1], [8, 9, 10])):  # rows at positions 5, 1 and 3
        for rows, step in ((numpy_rows, "numpy"), (c_rows, "c")):
            row = decoder_for(model, step)
            row.feed(prompt)
            rows.append(row)
    alone = [row.fresh() for row in numpy_rows]  # the NumPy step of each row, one at a time, for reference
    for a, row in zip(alone, numpy_rows):
        a.keys[:], a.values[:], a.pos = row.keys, row.values, row.pos
    batch_np, batch_c = numpy_rows[0].join(numpy_rows), c_rows[0].join(c_rows)
    for tokens in ([11, 12, 13], [14, 15, 16], [17, 18, 19]):
        got = batch_c.step(tokens)
        np.testing.assert_allclose(got, batch_np.step(tokens), atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(got, np.stack([a.feed([t]) for a, t in zip(alone, tokens)]), atol=1e-4, rtol=1e-4)
        assert got.shape == (3, 97)
    batch_c.keep([0, 2])
    np.testing.assert_allclose(batch_c.step([20, 21]), np.stack([alone[0].feed([20]), alone[2].feed([21])]),
                               atol=1e-4, rtol=1e-4)


@needs_c
def test_a_batch_steps_in_numpy_while_it_is_large_and_in_c_once_it_is_small(monkeypatch):
    import nslm.models.decode as decode

    model = transformer(jitter=0.5)
    prompts, seeds = [[i + 1, i + 2, i + 3] for i in range(12)], list(range(12))
    alone = [list(generate_ids(model, p, 40, stop_id=4, temperature=1.0, seed=s, engine="torch"))
             for p, s in zip(prompts, seeds)]
    assert len({len(story) for story in alone}) > 1  # rows end at different steps: the batch shrinks
    rows_in_c = []
    step = decode._CStep.step

    def counted(self, keys, values, tokens, positions):
        if keys.ndim == 5:  # a batch's step (not one sequence's prompt or refilled window)
            rows_in_c.append(len(tokens))
        return step(self, keys, values, tokens, positions)

    monkeypatch.setattr(decode._CStep, "step", counted)
    assert generate_batch_ids(model, prompts, 40, stop_id=4, temperature=1.0, seeds=seeds, engine="c") == alone
    assert rows_in_c and max(rows_in_c) <= decode.C_BATCH_ROWS < len(prompts)


@needs_c
def test_the_c_step_refuses_tokens_outside_the_vocabulary_and_serves_threads_at_once():
    model = transformer()
    decoder = decoder_for(model, "c")
    with pytest.raises(ValueError, match="outside the model's vocabulary or context"):
        decoder.feed([97])
    assert decoder.pos == 0
    # C indexes only caches of this model's shape, with one row per token
    with pytest.raises(ValueError, match="contiguous float32 caches of this model"):
        decoder.c_step.step(decoder.keys[:, :2], decoder.values[:, :2], [1], [0])
    with pytest.raises(ValueError, match="contiguous float32 caches of this model"):
        decoder.c_step.step(decoder.keys.astype(np.float64), decoder.values, [1], [0])
    batch = decoder.join([decoder.fresh(), decoder.fresh()])
    with pytest.raises(ValueError, match="3 tokens for 3 positions and a cache of 2 rows"):
        decoder.c_step.step(batch.keys, batch.values, [1, 2, 3], [0, 0, 0])
    prompts = [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10]]
    alone = [list(generate_ids(model, p, 40, temperature=1.0, seed=i, engine="c")) for i, p in enumerate(prompts)]
    together = [None] * len(prompts)

    def tell(i):  # each story its own decoder (`fresh`), sharing the weights' table
        together[i] = list(generate_ids(model, prompts[i], 40, temperature=1.0, seed=i, engine="c"))

    threads = [threading.Thread(target=tell, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone


def test_without_the_c_step_auto_decodes_with_numpy_and_c_says_why(monkeypatch):
    import nslm.models.decode as decode

    model = transformer()
    expected = list(generate_ids(model, [1, 2], 20, temperature=0, engine="torch"))
    monkeypatch.setattr(decode, "c_library", lambda: None)
    decoder = numpy_decoder(model)
    assert isinstance(decoder, NumpyDecoder) and decoder.c_step is None
    assert list(generate_ids(model, [1, 2], 20, temperature=0)) == expected
    with pytest.raises(NslmError, match="C decoding step .* C compiler"):
        numpy_decoder(model, "c")


def test_which_models_the_numpy_step_runs():
    assert NumpyDecoder.supports(transformer()) and NumpyRNNDecoder.supports(rnn())
    assert not NumpyDecoder.supports(transformer().train())  # dropout and training are PyTorch's
    assert not NumpyDecoder.supports(transformer().to(torch.bfloat16))
    assert not NumpyRNNDecoder.supports(rnn().train()) and not NumpyRNNDecoder.supports(rnn().to(torch.bfloat16))
    assert not NumpyDecoder.supports(rnn()) and not NumpyRNNDecoder.supports(transformer())
    assert isinstance(numpy_decoder(rnn()), NumpyRNNDecoder) and isinstance(numpy_decoder(transformer()), NumpyDecoder)
    assert numpy_decoder(rnn(), "torch") is None and numpy_decoder(transformer(), "torch") is None
    with pytest.raises(NslmError, match="NumPy and C decoding steps"):
        numpy_decoder(transformer().train(), "numpy")
    with pytest.raises(NslmError, match="C decoding step runs a Transformer"):
        numpy_decoder(rnn(), "c")
    assert numpy_decoder(transformer(), "numpy").c_step is None  # "numpy" is NumPy's arithmetic throughout
    with pytest.raises(ValueError, match="engine must be one of auto, c, numpy, torch"):
        list(generate_ids(transformer(), [1], 3, engine="fastest"))


@pytest.mark.parametrize("arch, hidden, layers", [("gru", 48, 2), ("gru", 0, 1), ("lstm", 0, 2), ("lstm", 40, 3)])
def test_the_numpy_rnn_step_gives_the_models_logits_and_stories(arch, hidden, layers):
    model = rnn(arch, hidden, layers)
    assert_decodes_the_models_logits(model, NumpyRNNDecoder(model), 40)  # past the context length
    # an RNN carries its state past the context length: 60 new tokens after prompts of up to 30
    prompts, seeds = [[5, 6, 7], [1], [9] * 30], [1, 2, 3]
    for temperature in (0, 1.0):
        alone = [list(generate_ids(model, p, 60, stop_id=4, temperature=temperature, seed=s, engine="torch"))
                 for p, s in zip(prompts, seeds)]
        assert [list(generate_ids(model, p, 60, stop_id=4, temperature=temperature, seed=s, engine="numpy"))
                for p, s in zip(prompts, seeds)] == alone
        assert generate_batch_ids(model, prompts, 60, stop_id=4, temperature=temperature, seeds=seeds) == alone


def test_the_shipped_gru_tells_the_same_stories_with_the_numpy_step():
    story_model = nslm.load("tinystories-gru-1m")
    prompt = story_model.encode_prompt("Tom and Sue went to the park")[0]
    for temperature, seed in ((0, None), (0.8, 7)):
        fast = list(generate_ids(story_model.model, prompt, 120, None, temperature, seed=seed, engine="numpy"))
        assert fast == list(generate_ids(story_model.model, prompt, 120, None, temperature, seed=seed, engine="torch"))


def test_decoding_keeps_numpys_blas_on_one_thread_and_restores_it():
    from threadpoolctl import ThreadpoolController

    from nslm.device import one_blas_thread

    def blas_threads():
        # NumPy's own BLAS: another library's (scipy's, loaded by an earlier test) is not NumPy's to limit
        libs = ThreadpoolController().select(user_api="blas").lib_controllers
        own = [lib for lib in libs if "numpy" in lib.filepath] or libs
        return {lib.num_threads for lib in own}

    before = blas_threads()
    with one_blas_thread():
        assert blas_threads() == {1}
    assert blas_threads() == before
    seen = []
    model = transformer()
    for _ in generate_ids(model, [1, 2], 5, temperature=0):
        seen.append(blas_threads())  # the story holds one thread from its first token to its end
    assert seen == [{1}] * 5
    assert len(generate_batch_ids(model, [[1], [2, 3]], 5, temperature=0)[0]) == 5
    assert blas_threads() == before


def test_the_app_keeps_numpys_blas_on_one_thread():
    # `nslm gui` in a process of its own (the setting lasts for the process), stopped where it would build the app
    import subprocess
    import sys

    code = ("import sys, numpy, nslm.gui.app as app\n"
            "from threadpoolctl import threadpool_info\n"
            "def stop(**kwargs):\n"
            "    print(sorted({l['num_threads'] for l in threadpool_info() if l['user_api'] == 'blas'}))\n"
            "    sys.exit(0)\n"
            "app.build_app = stop\n"
            "from nslm.cli import main\n"
            "main(['gui', '--port', '7999'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1:] == ["[1]"], out.stderr[-2000:]


@pytest.mark.parametrize("make", [transformer, rnn])
def test_the_folded_weights_are_kept_until_the_parameters_change(make):
    model = make()
    a, b = model.numpy_decoder(), model.numpy_decoder()
    assert a is not b and a.emb is b.emb  # the same folded weights, a state of its own each
    before = a.feed([1, 2])
    np.testing.assert_allclose(b.feed([1, 2]), before)
    with torch.no_grad():
        model.tok_emb.weight.mul_(1.5)  # in place, as an optimizer step: the version counter moves
        expected = model(torch.tensor([[1, 2]]))[0][0, -1].numpy()
    changed = model.numpy_decoder()
    assert changed.emb is not a.emb
    np.testing.assert_allclose(changed.feed([1, 2]), expected, atol=1e-4, rtol=1e-4)
    assert not np.allclose(expected, before, atol=1e-3)
