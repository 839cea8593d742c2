"""`nslm bench`: runs and prints its columns (figures are never asserted)."""

from __future__ import annotations

import json

import pytest
import torch

from nslm.cli import main
from nslm.device import bf16_native
from nslm.models.decode import c_library


def test_bench_train_prints_nslm_beside_the_plain_loop(capsys):
    assert main(["bench", "train", "--preset", "transformer-1m", "--steps", "1", "--warmup", "1",
                 "--batch-size", "2", "--context", "16", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for column in ("implementation", "dtype", "tokens/s", "model GFLOP/s", "nslm", "plain PyTorch", "fp32"):
        assert column in out
    if bf16_native(torch.device("cpu")):
        assert out.count("bf16") >= 3  # the header line and one row per implementation
    else:  # emulated bf16 would take seconds per step: its rows are left out, and the header says so
        assert "rows skipped" in out and out.count("bf16") == 1


def test_bench_generate_prints_with_and_without_cache(capsys):
    assert main(["bench", "generate", "--preset", "gru-1m", "--tokens", "5"]) == 0
    out = capsys.readouterr().out
    for column in ("with cache", "without cache", "tokens/s"):
        assert column in out
    # an RNN has a NumPy step (and no C step): the default, with PyTorch's beside it
    assert "with cache (NumPy step, the default)" in out and "with cache (PyTorch step)" in out and "C step" not in out


def test_bench_generate_names_the_step_each_model_decodes_with():
    from nslm.bench.cli import _default_step
    from nslm.models import build_model, load_preset

    # an LSTM's decoder holds its cell state as `c`: it has a NumPy step and no C step all the same
    assert _default_step(build_model(load_preset("lstm-1m")).eval()) == "numpy"
    assert _default_step(build_model(load_preset("gru-1m")).eval()) == "numpy"
    assert _default_step(build_model(load_preset("transformer-1m")).eval()) == ("c" if c_library() is not None else "numpy")
    assert _default_step(build_model(load_preset("transformer-1m")).train()) == "torch"


def test_bench_train_json_is_the_last_line_with_the_speedup(capsys, tmp_path):
    tiny = ["bench", "train", "--preset", "transformer-1m", "--steps", "1", "--warmup", "0", "--batch-size", "2",
            "--context", "8", "--device", "cpu"]
    assert main([*tiny, "--json", str(tmp_path / "train.json")]) == 0
    assert set(json.loads((tmp_path / "train.json").read_text())) >= {"tokens_per_s", "reference_tokens_per_s", "speedup"}
    assert main([*tiny, "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["tokens_per_s"] > 0 and figures["reference_tokens_per_s"] > 0
    assert figures["speedup"] == pytest.approx(figures["tokens_per_s"] / figures["reference_tokens_per_s"], abs=6e-4)
    assert figures["tokens_per_s"] == figures["tokens_per_s_by_row"][f"nslm {figures['dtype']}"]
    assert (figures["batch_size"], figures["context"]) == (2, 8)
    assert figures["optimizer"] == "muon"  # the preset's, as nslm train uses it
    assert main([*tiny, "--json", "--optimizer", "adamw", "--batch-threads", "1"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (figures["optimizer"], figures["batch_threads"]) == ("adamw", 1)
    # nslm's windows shared out over threads as nslm train does (the tiny batch of 2: at most 2)
    assert main([*tiny, "--json", "--batch-threads", "2"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["batch_threads"] == 2


def test_bench_generate_json_is_the_last_line_with_both_rates(capsys):
    assert main(["bench", "generate", "--preset", "transformer-1m", "--tokens", "6", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(out[-1])
    assert figures["tokens"] == 6 and figures["prompt_tokens"] == 32
    assert figures["cached_tokens_per_s"] > 0 and figures["uncached_tokens_per_s"] > 0 and figures["first_token_ms"] > 0
    # each rate is rounded to 0.1 token/s before the ratio is taken from them: relative, not absolute, slack
    assert figures["cache_speedup"] == pytest.approx(figures["cached_tokens_per_s"] / figures["uncached_tokens_per_s"], rel=1e-2)
    assert any("first token" in line for line in out[:-1])
    # a float32 Transformer on the CPU decodes with the C step by default (the NumPy step where no compiler
    # built it); the other cached steps are timed beside it
    engine = "c" if c_library() is not None else "numpy"
    assert figures["engine"] == engine and figures["torch_cached_tokens_per_s"] > 0
    assert figures["numpy_cached_tokens_per_s"] > 0 and figures["two_threads_tokens_per_s"] > 0
    assert any("two stories in two threads" in line for line in out[:-1])
    labels = {"c": "C step", "numpy": "NumPy step"}
    assert any(f"with cache ({labels[engine]}, the default)" in line for line in out[:-1])
    assert any("with cache (PyTorch step)" in line for line in out[:-1])
    if engine == "c":
        assert any("with cache (NumPy step)" in line for line in out[:-1])


def test_bench_train_times_only_the_precision_asked_for_and_gives_no_mfu_on_a_cpu(capsys):
    assert main(["bench", "train", "--preset", "gru-1m", "--steps", "1", "--warmup", "0", "--batch-size", "2",
                 "--context", "8", "--device", "cpu", "--dtype", "fp32", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(out[-1])
    assert set(figures["tokens_per_s_by_row"]) == {"nslm fp32", "plain PyTorch fp32"}
    assert figures["mfu"] is None and figures["compile"] is None  # no known peak for a CPU
    assert "MFU" in "\n".join(out[:-1])


@pytest.mark.parametrize("args, message", [
    (["--compile", "fastest"], "--compile takes default, reduce-overhead or max-autotune"),
    (["--dtype", "bf16"], None),
])
def test_bench_train_refuses_an_unknown_compile_mode_and_emulated_bf16(capsys, args, message):
    if message is None:
        if bf16_native(torch.device("cpu")):
            pytest.skip("this CPU has native bf16, so its bf16 rows are real")
        message = "bf16 is not native"
    assert main(["bench", "train", "--steps", "1", "--batch-size", "1", "--device", "cpu", *args]) == 2
    assert message in capsys.readouterr().err


def test_bench_generate_times_the_evaluation_prompts_by_each_path(capsys, tiny_run):
    assert main(["bench", "generate", "--model", str(tiny_run()), "--tokens", "4", "--prompt-set", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(out[-1])["prompt_set"]
    steps = ["C step", "NumPy step", "PyTorch step"] if c_library() is not None else ["NumPy step", "PyTorch step"]
    assert figures["engine"] == ("c" if c_library() is not None else "numpy")
    assert set(figures["tokens_per_s"]) == {f"{how}, {step}" for how in ("batch", "one by one") for step in steps}
    assert figures["tokens"] > 0 and figures["prompts"] >= 16
    # every path tells the same stories, but for a draw whose best two candidates tie to float rounding: the
    # tiny model's flat distributions over 300 tokens, past its 64-token context, give one such story of 44
    # (its greedy stories agree on all 44); a step that computed wrongly would part every story
    assert figures["stories_differing"] <= 2 and figures["same_stories"] == (figures["stories_differing"] == 0)
    rates = figures["tokens_per_s"]
    assert figures["batch_speedup"] == pytest.approx(rates[f"batch, {steps[0]}"] / rates[f"one by one, {steps[0]}"], abs=0.02)
    assert figures["batch_speedup_over_torch"] == pytest.approx(
        rates[f"batch, {steps[0]}"] / rates["one by one, PyTorch step"], abs=0.02)
    assert any(f"batch, {steps[0]}" in line for line in out[:-1])
    said = "yes" if figures["same_stories"] else f"NO ({figures['stories_differing']} differ)"
    assert any("the same" in line and line.endswith(said) for line in out[:-1])


def test_bench_generate_prompt_set_needs_a_trained_model(capsys):
    assert main(["bench", "generate", "--preset", "transformer-1m", "--prompt-set"]) == 2
    assert "--prompt-set needs --model" in capsys.readouterr().err


def _story_folder(root, n: int):
    from nslm.sample_data import synthetic_stories

    root.mkdir()
    stories = [f"{s} It was day {i}." for i, s in enumerate(synthetic_stories(n, seed=5))]
    (root / "train.txt").write_text("".join(f"{s}\n<|endoftext|>\n" for s in stories), encoding="utf-8")
    return root


def test_bench_novelty_times_the_index_path_beside_the_plain_way_and_compares_neighbours(capsys, tmp_path):
    data = _story_folder(tmp_path / "data", 12)
    assert main(["bench", "novelty", "--data", str(data), "--stories", "6", "--repeats", "3", "--neighbours",
                 "--index-stories", "12", "--queries", "3", "--max-tokens", "12", "--json"]) == 0
    out = capsys.readouterr().out
    for column in ("the plain way", "sorted by length", "stories/s", "GFLOP/s", "same top-1", "float16", "TF-IDF"):
        assert column in out
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["stories"] == 6 and figures["gflop_per_story"] > 0
    assert figures["max_abs_difference"] < 1e-5  # both paths embed the same vectors
    assert {"stories_per_s", "reference_stories_per_s", "speedup"} <= figures.keys()
    assert [len(v) for v in figures["seconds"].values()] == [3, 3]
    assert figures["stories_per_s"] == pytest.approx(6 / min(figures["seconds"]["index"]), rel=0.02)
    nb = figures["neighbours"]
    assert nb["index_stories"] == 12 and nb["queries"] == 3 and len(nb["paths"]) == 6
    reference = next(v for k, v in nb["paths"].items() if "reference" in k)
    assert reference["top1_same"] == 1.0 and reference["within_10"] == 1.0
    assert all(0 <= row["top1_same"] <= row["within_10"] <= row["within_100"] <= 1 for row in nb["paths"].values())


def test_bench_novelty_ranks_ties_against_the_reference_and_counts_the_encoders_arithmetic():
    import numpy as np

    from nslm.bench.novelty import embed_gflop, ranks_of

    sims = np.array([[0.1, 0.5, 0.3], [0.5, 0.5, 0.2], [0.9, 0.1, 0.2]])
    assert ranks_of(np.array([2, 1, 0]), sims).tolist() == [1, 1, 0]

    class Config:
        hidden_size, intermediate_size, num_hidden_layers = 384, 1536, 6

    class Module:
        auto_model = type("Model", (), {"config": Config})

    # all-MiniLM-L6-v2 over 189 word pieces: 6 layers of 2 x 189 x (4 x 384^2 + 2 x 384 x 1536) + 4 x 189^2 x 384
    assert embed_gflop([Module], [189]) == pytest.approx(4.343, abs=1e-3)
    assert embed_gflop([Module], [189, 189]) == pytest.approx(2 * embed_gflop([Module], [189]))
