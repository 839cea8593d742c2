"""Bad foreign inputs (`hf:` folders, llama2.c checkpoints) and bad `--device` values: each is one line
naming the problem, exit status 2, no traceback; nothing is built larger than the weights on disk hold, and
nothing is unpickled.
"""

from __future__ import annotations

import json
import math
import resource
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import nslm
from nslm.cli import main
from nslm.device import as_device, pick_device
from nslm.errors import NslmError
from nslm.interop import llama2c_format

GB = 2**30


@pytest.fixture(scope="module")
def hf_folder(tiny_run, tmp_path_factory) -> Path:
    """A tiny run exported as a transformers (Llama) folder."""
    out = tmp_path_factory.mktemp("foreign") / "tiny-hf"
    assert main(["export", str(tiny_run()), str(out), "--format", "hf"]) == 0
    return out


def corrupt(hf_folder: Path, tmp_path: Path, config: dict | None = None, **changes) -> Path:
    """A copy of the export with config.json changed (`changes`) or replaced (`config`)."""
    folder = tmp_path / "broken-hf"
    shutil.copytree(hf_folder, folder)
    data = json.loads((folder / "config.json").read_text()) if config is None else config
    data.update(changes)
    (folder / "config.json").write_text(json.dumps(data))
    return folder


def refused_in_one_line(capsys, args: list[str], *fragments: str) -> str:
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def generate_args(folder: Path) -> list[str]:
    return ["generate", "--model", f"hf:{folder}", "Once", "--max-tokens", "3", "--device", "cpu"]


def max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


# ---------------------------------------------------------------- F2: memory follows the weights, not config.json
def test_a_config_claiming_a_default_7b_llama_is_refused_from_the_header(hf_folder, tmp_path, capsys):
    folder = corrupt(hf_folder, tmp_path, config={"model_type": "llama"})
    before = max_rss()
    refused_in_one_line(capsys, generate_args(folder), str(folder), "6,738,415,616 parameters",
                        "the weights hold only")
    assert max_rss() - before < GB  # built on the meta device: a real 7B Llama would take 25 GiB


# ---------------------------------------------------------------- F13: corrupt hf: folders
@pytest.mark.parametrize("changes, fragment", [
    ({"num_attention_heads": 0}, "num_attention_heads must be a positive whole number, not 0"),
    ({"vocab_size": "x"}, "vocab_size must be a positive whole number, not 'x'"),
    ({"max_position_embeddings": -5}, "max_position_embeddings must be a positive whole number, not -5"),
    ({"hidden_size": 64}, "the config and the weights do not belong together"),
    ({"num_hidden_layers": 2}, "the config and the weights do not belong together"),
    ({"num_hidden_layers": 10**9}, "the weights hold only"),
    ({"intermediate_size": 24}, "has shape [32, 64] but config.json's LlamaForCausalLM needs [32, 24]"),
    ({"model_type": "bert"}, "only causal language models whose weights all load are read"),
    ({"model_type": "t5"}, "is not a causal language model"),
    ({"model_type": "no-such-model"}, "config.json is not a valid no-such-model config"),
])
def test_a_corrupt_config_is_one_line_naming_the_folder(hf_folder, tmp_path, capsys, changes, fragment):
    folder = corrupt(hf_folder, tmp_path, **changes)
    refused_in_one_line(capsys, generate_args(folder), str(folder), fragment)


def test_a_truncated_weights_file_is_one_line(hf_folder, tmp_path, capsys):
    folder = corrupt(hf_folder, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    refused_in_one_line(capsys, generate_args(folder), str(folder), "corrupt or not a safetensors file")


def test_pickled_weights_are_never_loaded(hf_folder, tmp_path, capsys, monkeypatch):
    folder = corrupt(hf_folder, tmp_path)
    (folder / "model.safetensors").unlink()
    torch.save({"model.norm.weight": torch.ones(32)}, folder / "pytorch_model.bin")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called on a pickle")

    monkeypatch.setattr(torch, "load", no_unpickling)
    refused_in_one_line(capsys, generate_args(folder), str(folder), "pytorch_model.bin",
                        "only safetensors weights (model.safetensors) are read")


def test_weights_that_leave_part_of_the_model_random_are_refused(hf_folder, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = corrupt(hf_folder, tmp_path)
    tensors = load_file(folder / "model.safetensors")
    tensors["model.final_norm.weight"] = tensors.pop("model.norm.weight")  # the same count, one name wrong
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(NslmError, match=r"lacks model\.norm\.weight .*only causal language models whose weights"):
        nslm.load(f"hf:{folder}", device="cpu")


def test_non_finite_hf_weights_are_refused(hf_folder, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = corrupt(hf_folder, tmp_path)
    tensors = load_file(folder / "model.safetensors")
    tensors["model.norm.weight"][3] = math.nan
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(NslmError, match=r"NaN or infinite values in model\.norm\.weight"):
        nslm.load(f"hf:{folder}", device="cpu")


def test_the_intact_export_still_loads(hf_folder):
    model = nslm.load(f"hf:{hf_folder}", device="cpu")
    assert model.context_length == 64 and model.generate("Once", max_tokens=3, seed=1).text.startswith("Once")


# ---------------------------------------------------------------- F19: llama2.c weights must be finite
def llama2c_checkpoint(path: Path, damage: float | None) -> Path:
    header = llama2c_format.Llama2cHeader(dim=8, hidden_dim=16, n_layers=1, n_heads=2, n_kv_heads=2, vocab_size=8,
                                          seq_len=4, shared_classifier=True)
    floats = np.random.default_rng(0).standard_normal(llama2c_format.weight_count(header)).astype("<f4")
    if damage is not None:
        floats[100] = damage  # inside tok_embeddings / wq
    raw = llama2c_format.HEADER.pack(8, 16, 1, 2, 2, 8, 4) + floats.tobytes()
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize("damage", [math.nan, math.inf])
def test_non_finite_llama2c_weights_are_refused(tmp_path, damage):
    bad = llama2c_checkpoint(tmp_path / "bad.bin", damage)
    with pytest.raises(NslmError, match="NaN or infinite values in wq"):
        llama2c_format.read_checkpoint(bad)
    with pytest.raises(NslmError, match="NaN or infinite values"):
        nslm.load(f"llama2c:{bad}", device="cpu")
    _, tensors = llama2c_format.read_checkpoint(llama2c_checkpoint(tmp_path / "good.bin", None))
    assert tensors["wq"].shape == (1, 8, 8)


# ---------------------------------------------------------------- F14: --device values
@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_device_picker_names_the_bad_value(no_cuda):
    for value in ("cuda:0", "cuda:7"):
        with pytest.raises(NslmError, match=f"--device {value}: this machine has no CUDA GPU"):
            pick_device(value)
        with pytest.raises(NslmError, match="no CUDA GPU"):
            as_device(value)
    for value in ("tpu", "nope", "cuda:x", "cpu:0", ""):
        with pytest.raises(NslmError, match="is not a device"):
            pick_device(value)
    with pytest.raises(NslmError, match="no CUDA GPU"):
        as_device(torch.device("cuda", 0))
    assert pick_device("cpu") == as_device("cpu") == as_device(torch.device("cpu")) == torch.device("cpu")


def test_a_gpu_number_past_the_last_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(NslmError, match=r"--device cuda:7: this machine has 2 CUDA GPUs \(cuda:0 to cuda:1\)"):
        pick_device("cuda:7")


def test_bad_device_values_are_one_line_in_every_command(tiny_run, no_cuda, capsys):
    run = str(tiny_run())
    gen = ["generate", "--model", run, "Once", "--max-tokens", "3"]
    bench_train = ["bench", "train", "--steps", "1", "--batch-size", "1", "--context", "8"]
    bench_gen = ["bench", "generate", "--model", run, "--tokens", "4"]
    for args, value, fragment in [(gen, "cuda:0", "no CUDA GPU"), (bench_gen, "cuda:0", "no CUDA GPU"),
                                  (bench_train, "cuda:7", "no CUDA GPU"), (bench_train, "tpu", "is not a device"),
                                  (bench_train, "nope", "is not a device"), (bench_gen, "tpu", "is not a device"),
                                  (gen, "tpu", "is not a device")]:
        refused_in_one_line(capsys, [*args, "--device", value], f"--device {value}", fragment)


def test_offline_a_hub_id_is_looked_up_in_the_cache_only(monkeypatch, capsys):
    """Where the hub's host does not resolve, `hf:ORG/NAME` asks transformers for cached files only (one line at
    once, not five retries with a line each); a resolving host lets it download."""
    import transformers

    asked = []

    def from_pretrained(target, local_files_only=False, **kwargs):
        asked.append(local_files_only)
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", from_pretrained)
    monkeypatch.setattr("nslm.hub.host_resolves", lambda: False)
    refused_in_one_line(capsys, ["generate", "--model", "hf:someone/tiny-model", "Once"], "hf:someone/tiny-model",
                        "tokenizer does not load")
    monkeypatch.setattr("nslm.hub.host_resolves", lambda: True)
    refused_in_one_line(capsys, ["generate", "--model", "hf:someone/tiny-model", "Once"], "hf:someone/tiny-model")
    assert asked == [True, False]
