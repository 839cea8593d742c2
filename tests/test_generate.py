"""Generation: nslm.load, Story / stream, nslm generate, and refusing missing, corrupt or pickled files."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import nslm
from nslm.cli import main
from nslm.errors import NslmError
from nslm.generate import api
from nslm.sampling import generate_ids

# a window of 32 tokens, so a long prompt is truncated after a few words
SHORT_WINDOW = ("model.context_length=32", "train.batch_size=4", "train.eval_tokens=1024", "train.sample_tokens=4")


@pytest.fixture(scope="module")
def runs(tiny_run) -> dict[str, Path]:
    """Tiny, briefly trained runs of both architectures."""
    return {preset: tiny_run(preset, 3, *SHORT_WINDOW) for preset in ("transformer-1m", "lstm-1m")}


def folder_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("preset", ["transformer-1m", "lstm-1m"])
def test_load_and_generate(runs, preset):
    model = nslm.load(runs[preset])
    assert isinstance(model, api.StoryModel)
    assert model.context_length == 32 and model.name == preset and model.device.type == "cpu"
    assert model.config["model"]["arch"] == preset.split("-")[0]
    story = model.generate("Once upon a time", max_tokens=12, temperature=0.8, seed=1)
    assert str(story) == story.text and story.text.startswith("Once upon a time")
    assert story.prompt == "Once upon a time" and story.text.endswith(story.completion)
    assert 1 <= story.n_tokens <= 12 and story.ended == (story.n_tokens < 12)
    assert not story.prompt_truncated
    again = model.generate("Once upon a time", max_tokens=12, temperature=0.8, seed=1)
    assert again.text == story.text  # a seed makes sampling repeatable


@pytest.mark.parametrize("preset", ["transformer-1m", "lstm-1m"])
def test_stream_pieces_make_the_story_and_cache_changes_nothing(runs, preset):
    model = nslm.load(runs[preset])
    stream = model.stream("Once upon a time", max_tokens=40, temperature=0)
    pieces = list(stream)
    assert len(pieces) > 3 and "".join(pieces) == stream.story.text
    plain = model.generate("Once upon a time", max_tokens=40, temperature=0, use_cache=False)
    assert plain.text == stream.story.text and plain.n_tokens == stream.story.n_tokens


def test_the_shipped_transformer_tells_the_same_greedy_story_with_the_cache_as_with_full_passes():
    model = nslm.load("tinystories-transformer-1m")
    story = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. " * 9
    prompt, _ = model.encode_prompt(story)
    assert 200 < len(prompt) < model.context_length  # so the 90 new tokens slide the window
    cached = list(generate_ids(model.model, prompt, 90, temperature=0, use_cache=True))
    plain = list(generate_ids(model.model, prompt, 90, temperature=0, use_cache=False))
    assert cached == plain and len(cached) == 90


def test_a_batch_of_prompts_tells_the_stories_told_one_by_one(runs):
    prompts = ["Once upon a time", "The dog", "Tom and Sue went to the park with their ball. " * 5, "A"]
    for preset in ("transformer-1m", "lstm-1m"):
        model = nslm.load(runs[preset])
        batch = model.generate_batch(prompts, max_tokens=40, temperature=0.8, seeds=[7, 8, 9, 10])
        assert batch == [model.generate(p, max_tokens=40, temperature=0.8, seed=s) for p, s in zip(prompts, [7, 8, 9, 10])]
        assert batch[2].prompt_truncated  # the window of these runs is 32 tokens
    shipped = nslm.load("tinystories-transformer-1m")
    greedy = shipped.generate_batch(prompts, max_tokens=60, temperature=0)
    assert greedy == [shipped.generate(p, max_tokens=60, temperature=0) for p in prompts]
    with pytest.raises(NslmError, match="one seed per prompt"):
        shipped.generate_batch(prompts, seeds=[1])


def test_prompts_empty_too_long_and_unconditional(runs):
    model = nslm.load(runs["transformer-1m"])
    for empty in ("", "   ", None):
        with pytest.raises(NslmError, match="prompt is empty"):
            model.generate(empty)
    long_prompt = " ".join(["Tom and Lily played in the park with a big red ball."] * 20)
    story = model.generate(long_prompt, max_tokens=5, temperature=0)
    assert story.prompt_truncated and len(model.tokenizer.encode(story.prompt)) <= 32 + 1
    free = model.generate(None, unconditional=True, max_tokens=8, seed=0)
    assert free.n_tokens >= 1 and "<|endoftext|>" not in free.text
    with pytest.raises(NslmError, match="temperature"):
        model.generate("Once", temperature=-1)
    with pytest.raises(NslmError, match="max_tokens"):
        model.generate("Once", max_tokens=0)


def test_cli_streams_and_says_why_it_stopped(runs, capsys):
    assert main(["generate", "--model", str(runs["lstm-1m"]), "Once upon a time", "--max-tokens", "6",
                 "--num-samples", "2", "--seed", "3", "--top-k", "20", "--top-p", "0.9"]) == 0
    out, err = capsys.readouterr()
    assert out.count("Once upon a time") == 2 and "-" * 40 in out
    assert "--max-tokens 6" in err or err == ""
    long_prompt = "Lily saw a big dog in the park. " * 30
    assert main(["generate", "--model", str(runs["transformer-1m"]), long_prompt, "--max-tokens", "3",
                 "--no-cache"]) == 0
    assert "longer than the model's context of 32 tokens" in capsys.readouterr().err
    assert main(["generate", "--model", str(runs["transformer-1m"]), ""]) == 2
    assert "prompt is empty" in capsys.readouterr().err


@pytest.mark.parametrize("args, words", [
    (["--temperature", "nan"], "temperature must be 0 (greedy) or a positive number, not nan"),
    (["--temperature", "inf"], "temperature must be 0 (greedy) or a positive number, not inf"),
    (["--top-p", "nan"], "top_p must be in (0, 1], not nan"),
    (["--seed", str(2**70)], f"--seed must be a whole number from 0 to {2**63 - 1}, not {2**70}"),
    (["--seed", "-1"], "--seed must be a whole number from 0"),
    (["--seed", str(2**63 - 1), "--num-samples", "2"], "--seed plus --num-samples - 1 must be"),
])
def test_absurd_sampling_values_are_one_line(runs, capsys, args, words):
    assert main(["generate", "--model", str(runs["transformer-1m"]), "Once upon a time", *args]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and words in err and err.count("\n") == 1 and out == ""
    model = nslm.load(runs["transformer-1m"])
    with pytest.raises(NslmError, match="seed must be"):
        model.generate("Once upon a time", seed=2**70)
    with pytest.raises(NslmError, match="temperature must be"):
        model.generate("Once upon a time", temperature=float("nan"))


def broken_copy(run: Path, tmp_path: Path, damage) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    damage(copy)
    return copy


def _pickle_weights(folder: Path) -> None:
    torch.save({"tok_emb.weight": torch.zeros(3)}, folder / "model.safetensors")
    shutil.rmtree(folder / "last")


def _only_pt(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "model.pt")
    shutil.rmtree(folder / "last")


def _wrong_shape(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["model"]["d_model"] = 64
    (folder / "config.json").write_text(json.dumps(config))


def _claims(**model) -> callable:
    """Damage: config.json edited to describe another model beside the same small weights."""
    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config["model"].update(model)
        (folder / "config.json").write_text(json.dumps(config))
    return edit


def _weights_as(change) -> callable:
    """Damage: every tensor of model.safetensors (and last/) passed through `change`."""
    def edit(folder: Path) -> None:
        for path in (folder / "model.safetensors", folder / "last" / "model.safetensors"):
            save_file({k: change(v) for k, v in load_file(str(path)).items()}, str(path))
    return edit


def _one_nan(tensors: torch.Tensor) -> torch.Tensor:
    return tensors.clone().index_fill_(0, torch.tensor([0]), float("nan")) if tensors.dim() == 2 else tensors


def _other_tokenizer(folder: Path) -> None:
    text = (folder / "tokenizer.json").read_text()
    (folder / "tokenizer.json").write_text(text + " ")  # same tokens, different bytes: not the trained file


@pytest.mark.parametrize("damage, words", [
    (lambda f: ((f / "model.safetensors").unlink(), shutil.rmtree(f / "last")), "no model.safetensors"),
    (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:300]), "corrupt"),
    (lambda f: (f / "model.safetensors").write_bytes(b"\x00" * 64), "corrupt"),
    (_pickle_weights, "pickle"),
    (_only_pt, "never pickles"),
    (_wrong_shape, "do not belong together"),
    (lambda f: (f / "config.json").unlink(), "no config.json"),
    (lambda f: (f / "config.json").write_text("{not json"), "corrupt"),
    (lambda f: (f / "tokenizer.json").unlink(), "no tokenizer.json"),
    (_other_tokenizer, "not the tokenizer"),
    (_claims(d_model=1024, n_layer=24, d_ff=4096, n_head=16),
     "holds 43,104 weights but config.json describes a model of 403,751,936 parameters"),
    (_claims(d_model=4096, n_layer=48, d_ff=16384, n_head=32), "makes 12,889,493,504 parameters, more than nslm's limit"),
    (lambda f: (f / "config.json").write_text("[" * 100_000), "corrupt"),
    (_weights_as(lambda t: t.to(torch.int8)), "holds .* as I8; nslm models compute in float32"),
    (_weights_as(_one_nan), "holds NaN or infinite values in"),
], ids=["missing", "truncated", "junk", "pickle", "pt-only", "shape", "no-config", "bad-config", "no-tokenizer",
        "other-tokenizer", "claims-bigger", "claims-absurd", "deep-config", "int8", "nan"])
def test_broken_run_folders_are_one_clear_error(runs, tmp_path, capsys, damage, words):
    folder = broken_copy(runs["transformer-1m"], tmp_path, damage)
    before = folder_digest(folder)
    with pytest.raises(NslmError, match=words):
        nslm.load(folder)
    assert main(["generate", "--model", str(folder), "Once upon a time"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert folder_digest(folder) == before  # nothing overwritten


def test_half_precision_weights_are_widened_exactly(runs, tmp_path):
    folder = broken_copy(runs["transformer-1m"], tmp_path, _weights_as(lambda t: t.to(torch.bfloat16)))
    model = nslm.load(folder)
    stored = load_file(str(folder / "model.safetensors"))
    assert all(torch.equal(model.model.state_dict()[k], v.float()) for k, v in stored.items())
    assert model.generate("Once upon a time", max_tokens=3, seed=1).n_tokens <= 3


def test_names_resolve_to_shipped_models(runs, tmp_path, monkeypatch):
    shipped = tmp_path / "pretrained"
    shutil.copytree(runs["lstm-1m"], shipped / "tiny-lstm")
    monkeypatch.setattr(api, "pretrained_root", lambda: shipped)
    assert api.list_shipped() == ["tiny-lstm"]
    assert nslm.load("tiny-lstm").name == "tiny-lstm"
    with pytest.raises(NslmError, match="shipped models: tiny-lstm"):
        nslm.load("no-such-model")


def test_format_story_capitalises_the_start():
    assert api.format_story("  once upon a time.") == "Once upon a time."
    assert api.format_story('"hello," said Tom.') == '"Hello," said Tom.'
    # byte-level tokens sampled at a high temperature can leave half a character and indented lines
    assert api.format_story("once\n  upon a \ufffdtime.\n\n It ended.") == "Once\nupon a time.\n\nIt ended."
