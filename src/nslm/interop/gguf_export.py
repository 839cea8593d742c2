"""An nslm Transformer in the Llama layout as one GGUF file (float32), tokenizer included.

GGUF is llama.cpp's format: tensors under its names (`blk.N.attn_q.weight`, ...), the hyper-parameters
and the tokenizer as metadata. llama.cpp rotates neighbouring pairs of q/k dimensions, so those rows are
permuted from our rotate-half order (as llama.cpp's own converter does); transformers' GGUF loader
permutes them back. The output head is tied, so no `output.weight` is written: readers use the
embedding. Our byte-level BPE tokenizer is GPT-2's kind (`tokenizer.ggml.model = gpt2`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nslm.atomic import atomic_path
from nslm.errors import NslmError
from nslm.generate.api import StoryModel
from nslm.interop import layouts

TOKEN_NORMAL, TOKEN_CONTROL = 1, 3  # llama.cpp's token types


def check_gguf_exportable(story_model: StoryModel, layout: str) -> None:
    """One-line NslmError for a run the GGUF export cannot hold."""
    cfg = story_model.model.cfg
    if layout != "llama":
        raise NslmError(f"the GGUF export writes the Llama layout (rotary positions); this run has "
                        f"model.pos_encoding={cfg.pos_encoding}: export it with --format hf instead")
    if cfg.bias:
        raise NslmError("model.bias=true: the GGUF export writes the Llama layout without biases; "
                        "export it with --format hf instead")
    if story_model.tokenizer.kind != "bpe":
        raise NslmError(f"the GGUF export holds byte-level BPE tokenizers; this run's tokenizer is "
                        f"{story_model.tokenizer.kind}-level: export it with --format hf instead")


def gguf_tensors(story_model: StoryModel) -> dict[str, np.ndarray]:
    """llama.cpp's tensor names and float32 arrays (q/k rows in neighbour-pair order)."""
    cfg = story_model.model.cfg
    hf = layouts.nslm_to_llama(story_model.model.state_dict(), cfg)
    out = {"token_embd.weight": hf["model.embed_tokens.weight"], "output_norm.weight": hf["model.norm.weight"]}
    names = {"self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate",
             "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
             "post_attention_layernorm": "ffn_norm"}
    for i in range(cfg.n_layer):
        p = f"model.layers.{i}."
        out[f"blk.{i}.attn_q.weight"] = layouts.to_interleaved(hf[f"{p}self_attn.q_proj.weight"], cfg.n_head)
        out[f"blk.{i}.attn_k.weight"] = layouts.to_interleaved(hf[f"{p}self_attn.k_proj.weight"], cfg.n_head)
        for theirs, ours in names.items():
            out[f"blk.{i}.{ours}.weight"] = hf[f"{p}{theirs}.weight"]
    return {k: v.numpy().astype(np.float32) for k, v in out.items()}


def tokenizer_fields(story_model: StoryModel) -> dict:
    """The vocabulary (GPT-2 byte alphabet), token types and merges of our byte-level BPE tokenizer."""
    data = json.loads(story_model.tokenizer.to_json())
    vocab = dict(data["model"]["vocab"])
    for added in data.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
    tokens = [""] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    special = {a["id"] for a in data.get("added_tokens", []) if a.get("special")}
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    types = [TOKEN_CONTROL if i in special else TOKEN_NORMAL for i in range(len(tokens))]
    return {"tokens": tokens, "types": types, "merges": merges}


def write_gguf(story_model: StoryModel, layout: str, out: Path, overwrite: bool = False) -> Path:
    """Write the GGUF file `out` atomically."""
    check_gguf_exportable(story_model, layout)
    # gguf is the optional extra nslm[hf]; only this export needs it
    try:
        import gguf
    except ImportError:
        raise NslmError("--format gguf needs the gguf package; install it with pip install 'nslm[hf]'") from None
    cfg, eot = story_model.model.cfg, story_model.tokenizer.eot_id
    tok = tokenizer_fields(story_model)
    with atomic_path(out) as tmp:
        writer = gguf.GGUFWriter(str(tmp), "llama")
        writer.add_name(story_model.name)
        writer.add_context_length(cfg.context_length)
        writer.add_embedding_length(cfg.d_model)
        writer.add_block_count(cfg.n_layer)
        writer.add_feed_forward_length(cfg.d_ff)
        writer.add_head_count(cfg.n_head)
        writer.add_head_count_kv(cfg.n_head)
        writer.add_rope_dimension_count(cfg.d_model // cfg.n_head)
        writer.add_rope_freq_base(float(cfg.rope_base))
        writer.add_layer_norm_rms_eps(layouts.RMS_EPS)
        writer.add_vocab_size(cfg.vocab_size)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("gpt-2")
        writer.add_token_list(tok["tokens"])
        writer.add_token_types(tok["types"])
        writer.add_token_merges(tok["merges"])
        for add in (writer.add_bos_token_id, writer.add_eos_token_id, writer.add_pad_token_id):
            add(eot)
        writer.add_add_bos_token(True)  # every story starts after <|endoftext|>, as in training
        for name, array in gguf_tensors(story_model).items():
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return out
