"""Export to transformers / GGUF and back, and other projects' models (hf:, llama2c:) under our measures.

Every check runs real code on real validation stories: exported logits against nslm's, greedy stories,
bits per byte through nslm, `hf:` and transformers' own loss, a GGUF file read back by transformers, and
llama2.c's stories260K scored by our loader against a plain numpy forward pass written here.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import nslm
from nslm.cli import main
from nslm.data.reading import read_stories
from nslm.errors import NslmError
from nslm.eval.likelihood import evaluate_likelihood
from nslm.eval.scoring import Scorer
from nslm.sampling import generate_ids
from nslm.interop import layouts, llama2c_format
from nslm.models import ModelConfig
from nslm.sample_data import shared_data_dir

transformers = pytest.importorskip("transformers", reason="the nslm[hf] extra (transformers) is not installed")

TINY = ["--set", "model.d_model=32", "--set", "model.n_layer=2", "--set", "model.n_head=4", "--set", "model.d_ff=48",
        "--set", "model.context_length=96", "--set", "train.batch_size=8", "--set", "train.eval_tokens=2048",
        "--set", "train.sample_tokens=4", "--set", "train.lr=1e-2", "--device", "cpu"]
GPT2 = ["--set", "model.pos_encoding=learned", "--set", "model.norm=layernorm", "--set", "model.mlp=gelu"]
ANCHOR = "anchors/llama2c-stories260K"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir) -> dict[str, Path]:
    """Briefly trained tiny runs in the Llama layout (the preset) and the GPT-2 layout, and their HF exports."""
    root = tmp_path_factory.mktemp("interop")
    out = {}
    for layout, extra in (("llama", []), ("gpt2", GPT2)):
        run = root / layout
        assert main(["train", "--preset", "transformer-1m", "--data", str(data_dir), "--out", str(run),
                     "--max-steps", "25", *TINY, *extra]) == 0
        assert main(["export", str(run), str(root / f"{layout}-hf"), "--format", "hf"]) == 0
        out[layout], out[f"{layout}-hf"] = run, root / f"{layout}-hf"
    return out


def validation_batches(story_model, data_dir: Path, n: int = 6) -> list[torch.Tensor]:
    """The first `n` validation stories as [1, T] id tensors: end-of-story, then the story, cut to the context."""
    stories = list(read_stories([data_dir / "valid.txt"]))[:n]
    tok = story_model.tokenizer
    return [torch.tensor([([tok.eot_id] + tok.encode(s))[: story_model.context_length]]) for s in stories]


@pytest.mark.parametrize("layout, cls", [("llama", "LlamaForCausalLM"), ("gpt2", "GPT2LMHeadModel")])
def test_exported_folder_gives_nslm_logits_on_validation_stories(runs, data_dir, layout, cls):
    folder = runs[f"{layout}-hf"]
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json", "README.md"} <= {p.name for p in folder.iterdir()}
    ours = nslm.load(runs[layout], device="cpu")
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    assert type(hf).__name__ == cls and json.loads((folder / "config.json").read_text())["architectures"] == [cls]
    assert tok.eos_token == tok.bos_token == "<|endoftext|>" and hf.generation_config.eos_token_id == ours.tokenizer.eot_id
    worst = 0.0
    for ids in validation_batches(ours, data_dir):
        story = ours.tokenizer.decode(ids[0, 1:].tolist())
        assert tok(story).input_ids == ids[0].tolist() or len(ids[0]) == ours.context_length  # eot + the same ids
        with torch.no_grad():
            worst = max(worst, float((hf(ids).logits - ours.model(ids)[0]).abs().max()))
    assert worst < 1e-4
    card = (folder / "README.md").read_text()
    assert cls in card and "nslm generate --model hf:" in card and "best validation loss" in card


@pytest.mark.parametrize("layout", ["llama", "gpt2"])
def test_greedy_generation_gives_the_same_story(runs, layout):
    ours = nslm.load(runs[layout], device="cpu")
    hf = transformers.AutoModelForCausalLM.from_pretrained(runs[f"{layout}-hf"])
    prompt = [ours.tokenizer.eot_id] + ours.tokenizer.encode("Once upon a time, there was a little")
    new = 96 - len(prompt)  # within the context, where neither side slides its window
    mine = list(generate_ids(ours.model, prompt, new, ours.tokenizer.eot_id, temperature=0))
    theirs = hf.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=new)[0, len(prompt):].tolist()
    if theirs and theirs[-1] == ours.tokenizer.eot_id:
        theirs = theirs[:-1]  # transformers keeps the end-of-story token it stopped at; nslm does not yield it
    assert len(mine) > 10 and mine == theirs
    via_hf = nslm.load(f"hf:{runs[f'{layout}-hf']}", device="cpu")
    assert via_hf.generate("Once upon a time, there was a little", temperature=0, max_tokens=40).text == \
        ours.generate("Once upon a time, there was a little", temperature=0, max_tokens=40).text


def test_round_trip_bits_per_byte_through_hf_and_transformers(runs, data_dir):
    ours = nslm.load(runs["llama"], device="cpu")
    via_hf = nslm.load(f"hf:{runs['llama-hf']}", device="cpu")
    a = evaluate_likelihood(ours, data_dir, max_tokens=6000)
    b = evaluate_likelihood(via_hf, data_dir, max_tokens=6000)
    assert a["tokenized_by"] == "the data folder" and b["tokenized_by"].startswith("the model's own tokenizer")
    assert a["tokens"] == b["tokens"] and a["bytes"] == b["bytes"]
    for key in ("bits_per_byte", "bits_per_byte_excl_eos"):
        assert b[key] == pytest.approx(a[key], rel=1e-5)
    # transformers' own loss on whole stories (cut to the context) against nslm's scorer on the same tokens
    hf = transformers.AutoModelForCausalLM.from_pretrained(runs["llama-hf"])
    scorer = Scorer(ours.model, ours.tokenizer.eot_id, ours.context_length)
    for ids in validation_batches(ours, data_dir, 4):
        with torch.no_grad():
            hf_nats = float(hf(ids, labels=ids).loss) * (ids.shape[1] - 1)
        ours_nats = -float(scorer.token_logprobs([ids[0, 1:].tolist()])[0].sum())
        assert hf_nats == pytest.approx(ours_nats, rel=1e-5)


def test_gguf_file_reads_back_through_transformers(runs, data_dir, tmp_path):
    pytest.importorskip("gguf", reason="the nslm[hf] extra (gguf) is not installed")
    pytest.importorskip("accelerate", reason="transformers' GGUF loader needs accelerate (nslm[hf])")
    out = tmp_path / "tiny.gguf"
    assert main(["export", str(runs["llama"]), str(out), "--format", "gguf"]) == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)
    ours = nslm.load(runs["llama"], device="cpu")
    assert type(hf).__name__ == "LlamaForCausalLM" and hf.config.tie_word_embeddings
    for ids in validation_batches(ours, data_dir, 4):
        story = ours.tokenizer.decode(ids[0, 1:].tolist())
        if len(ids[0]) < ours.context_length:
            assert tok(story).input_ids == ids[0].tolist()  # BOS (= end-of-story) added, then our ids
        with torch.no_grad():
            assert float((hf(ids).logits - ours.model(ids)[0]).abs().max()) < 1e-4
    assert not list(tmp_path.glob(".*.tmp"))


def test_settings_without_a_standard_layout_are_refused_in_one_line(tmp_path, capsys):
    cases = {("rope", "rmsnorm", "gelu"): "model.mlp=gelu", ("rope", "layernorm", "swiglu"): "model.norm=layernorm",
             ("learned", "rmsnorm", "gelu"): "model.norm=rmsnorm", ("learned", "layernorm", "swiglu"): "model.mlp=swiglu",
             ("sinusoidal", "rmsnorm", "swiglu"): "model.pos_encoding=sinusoidal"}
    for (pos, norm, mlp), named in cases.items():
        with pytest.raises(NslmError, match=named):
            layouts.export_layout(ModelConfig(pos_encoding=pos, norm=norm, mlp=mlp))
    assert layouts.export_layout(ModelConfig(mlp="swiglu")) == "llama"
    assert main(["export", "tinystories-gru-1m", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "GRU models have no transformers class" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())


def test_refusals_of_the_gguf_export_and_of_an_existing_output(runs, capsys):
    assert main(["export", str(runs["gpt2"]), str(runs["gpt2"].parent / "x.gguf"), "--format", "gguf"]) == 2
    assert "export it with --format hf" in capsys.readouterr().err
    assert main(["export", str(runs["llama"]), str(runs["llama-hf"])]) == 2
    assert "already exists" in capsys.readouterr().err


def test_rotary_layouts_are_inverse_and_pair_neighbours():
    w = torch.arange(2 * 8 * 3, dtype=torch.float32).reshape(16, 3)  # 2 heads of width 8
    inter = layouts.to_interleaved(w, 2)
    assert torch.equal(layouts.from_interleaved(inter, 2), w)
    # head 0: rotate-half pairs (0, 4), (1, 5), ... become neighbours (0, 1), (2, 3), ...
    assert torch.equal(inter[:8, 0], w[[0, 4, 1, 5, 2, 6, 3, 7], 0])


def test_unknown_foreign_models_are_one_clear_error(tmp_path):
    with pytest.raises(NslmError, match="not a folder with a transformers model"):
        nslm.load(f"hf:{tmp_path / 'nothing'}")
    with pytest.raises(NslmError, match="does not exist"):
        nslm.load(f"llama2c:{tmp_path / 'missing.bin'}")
    bad = tmp_path / "short.bin"
    bad.write_bytes(np.array([64, 172, 5, 8, 4, 512, 512], dtype="<i4").tobytes() + b"\0" * 400)
    with pytest.raises(NslmError, match="truncated"):
        nslm.load(f"llama2c:{bad}")


# ---------------------------------------------------------------- llama2.c stories260K
@pytest.fixture(scope="module")
def anchor() -> Path:
    root = shared_data_dir()
    if root is None or not (root / ANCHOR / "stories260K.bin").is_file():
        pytest.skip("needs the llama2.c stories260K checkpoint in ../shared/data/anchors (a shared file)")
    return root / ANCHOR


def run_c_encode(tok: llama2c_format.Llama2cTokenizer, text: str) -> list[int]:
    """llama2.c's run.c `encode`, written out plainly: rescan for the best-scoring pair after every merge."""
    ids = []
    for ch in " " + text:
        piece = ch.encode()
        ids += [tok.pieces.index(piece)] if piece in tok.pieces else [b + 3 for b in piece]
    while True:
        best, at = -1e10, -1
        for i in range(len(ids) - 1):
            merged = tok.pieces[ids[i]] + tok.pieces[ids[i + 1]]
            if merged in tok.pieces and tok.scores[tok.pieces.index(merged)] > best:
                best, at = tok.scores[tok.pieces.index(merged)], i
        if at < 0:
            return ids
        ids[at : at + 2] = [tok.pieces.index(tok.pieces[ids[at]] + tok.pieces[ids[at + 1]])]


def plain_forward_logprobs(tensors: dict, h, tokens: list[int]) -> np.ndarray:
    """llama2.c's forward pass in float64 numpy, from the file's own arrays (neighbour-pair rotary from its
    stored tables, grouped keys and values), returning log p(tokens[t+1] | tokens[:t+1])."""
    x = tensors["tok_embeddings"][tokens].astype(np.float64)
    T, hs = len(tokens), h.head_size
    cos, sin = tensors["freq_cis_real"][:T], tensors["freq_cis_imag"][:T]

    def rms(v, w):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + 1e-5) * w

    def rope(v):  # v [T, heads, hs]: rotate each (2i, 2i+1) pair
        a, b = v[..., 0::2], v[..., 1::2]
        out = np.empty_like(v)
        out[..., 0::2] = a * cos[:, None] - b * sin[:, None]
        out[..., 1::2] = a * sin[:, None] + b * cos[:, None]
        return out

    mask = np.triu(np.full((T, T), -np.inf), 1)
    for layer in range(h.n_layers):
        xb = rms(x, tensors["rms_att"][layer])
        q = rope((xb @ tensors["wq"][layer].T).reshape(T, h.n_heads, hs))
        k = rope((xb @ tensors["wk"][layer].T).reshape(T, h.n_kv_heads, hs))
        v = (xb @ tensors["wv"][layer].T).reshape(T, h.n_kv_heads, hs)
        heads = []
        for head in range(h.n_heads):
            kv = head // (h.n_heads // h.n_kv_heads)
            att = q[:, head] @ k[:, kv].T / math.sqrt(hs) + mask
            att = np.exp(att - att.max(-1, keepdims=True))
            heads.append((att / att.sum(-1, keepdims=True)) @ v[:, kv])
        x = x + np.concatenate(heads, axis=-1) @ tensors["wo"][layer].T
        xb = rms(x, tensors["rms_ffn"][layer])
        g = xb @ tensors["w1"][layer].T
        x = x + ((g / (1 + np.exp(-g))) * (xb @ tensors["w3"][layer].T)) @ tensors["w2"][layer].T
    logits = rms(x, tensors["rms_final"]) @ tensors["tok_embeddings"].T
    logits = logits - logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return logp[np.arange(T - 1), tokens[1:]]


def test_llama2c_tokenizer_is_run_c_encode_and_decodes_back(anchor):
    tok = llama2c_format.Llama2cTokenizer.load(anchor / "tok512.bin", 512)
    stories = list(read_stories([shared_data_dir() / "tinystories-std" / "TinyStories-valid-sample.txt"]))[:8]
    for story in stories:
        ids = tok.encode(story)
        assert ids == run_c_encode(tok, story) and tok.decode(ids) == story
    assert tok.decode(tok.encode("Once upon a time")) == "Once upon a time"


def test_stories260K_bits_per_byte_match_a_plain_forward_pass(anchor, tmp_path, capsys):
    """Our loader (llama2.c weights in nslm's Transformer) against the numpy pass above, within 1e-5 bits per
    byte (float32 against float64), on the first 16 shared validation stories that fit the 512-token context
    (longer ones are scored in windows, the Scorer's own tested rule), each after BOS."""
    tok = llama2c_format.Llama2cTokenizer.load(anchor / "tok512.bin", 512)
    stories = [s for s in read_stories([shared_data_dir() / "tinystories-std" / "TinyStories-valid-sample.txt"])
               if len(tok.encode(s)) < 512][:16]
    data = tmp_path / "data"
    data.mkdir()
    (data / "valid.txt").write_text("".join(f"{s}\n<|endoftext|>\n" for s in stories), encoding="utf-8")
    n_bytes = sum(len(s.encode()) for s in stories)
    meta = {"format": "nslm-tokens", "version": 1, "dtype": "uint16", "vocab_size": 4096, "eot_id": 0,
            "tokenizer_kind": "bpe", "tokenizer_sha256": "ours", "valid": {"stories": 16, "bytes": n_bytes}}
    (data / "meta.json").write_text(json.dumps(meta))  # a data folder of another tokenizer: only valid.txt is read
    spec = f"llama2c:{anchor / 'stories260K.bin'}"
    assert main(["eval", "likelihood", "--model", spec, "--data", str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    header, tensors = llama2c_format.read_checkpoint(anchor / "stories260K.bin")
    nats = 0.0
    for story in stories:
        ids = [llama2c_format.BOS_ID] + tok.encode(story)
        assert len(ids) <= header.seq_len
        nats -= plain_forward_logprobs(tensors, header, ids).sum()
    plain_bpb = nats / math.log(2) / n_bytes
    assert result["bytes"] == n_bytes and result["eot_id"] == 1 and result["stories"] == 16
    assert result["bits_per_byte_excl_eos"] == pytest.approx(plain_bpb, abs=1e-5)
    assert 0.8 < plain_bpb < 1.0  # short stories only; the README gives 0.933 on all 220


def test_stories260K_greedy_story_is_the_one_llama2c_documents(anchor):
    model = nslm.load(f"llama2c:{anchor / 'stories260K.bin'}", device="cpu")
    story = model.generate("", unconditional=True, temperature=0, max_tokens=60)
    assert story.text.startswith("Once upon a time, there was a little girl named Lily. She loved to play "
                                 "outside in the park. One day, she saw a big, red ball.")
    assert model.model.param_counts()["total"] == 260_032


def test_foreign_models_in_the_runs_folder_are_listed_and_load(runs, anchor, tmp_path):
    from nslm.gui.runs import list_models

    (tmp_path / "s260k").mkdir()
    for name in ("stories260K.bin", "tok512.bin"):
        (tmp_path / "s260k" / name).symlink_to(anchor / name)
    shutil.copytree(runs["llama-hf"], tmp_path / "tiny-hf")  # a link to a folder elsewhere is not a member
    rows = {e.name: e for e in list_models(tmp_path) if e.kind == "run"}
    assert rows["s260k"].arch == "llama2c 5L d64 rope" and rows["s260k"].params == "260.03k"
    assert rows["tiny-hf"].arch.startswith("hf llama") and rows["tiny-hf"].loadable
    assert nslm.load(tmp_path / "s260k").model.param_counts()["total"] == 260_032
    assert nslm.load(tmp_path / "tiny-hf").config["source"].startswith("hf:")
