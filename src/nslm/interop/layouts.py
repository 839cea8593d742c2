"""How an nslm Transformer maps onto the standard layouts of other tools, tensor by tensor.

- Llama (`LlamaForCausalLM`): rotary positions, RMSNorm, gated SiLU MLP, tied embeddings. Our rotary
  pairs dimension i with i + head_dim/2 and uses the angles pos / base^(2i/head_dim): exactly
  transformers' `rotate_half` convention, so q/k weights go across unchanged. llama.cpp (GGUF) and
  llama2.c pair neighbouring dimensions (2i, 2i+1) instead, so their q/k rows are permuted
  (`to_interleaved` / `from_interleaved`).
- GPT-2 (`GPT2LMHeadModel`): learned positions, LayerNorm, GELU; its Conv1D weights are stored
  transposed, and biases we do not have are written as zeros.
A setting that neither layout can express is refused in one sentence naming it.
"""

from __future__ import annotations

import torch

from nslm.errors import NslmError
from nslm.models import ModelConfig

RMS_EPS = 1e-5  # nn.RMSNorm(eps=1e-5) in models/transformer.py, llama2.c's and Llama's value
LAYERNORM_EPS = 1e-5  # nn.LayerNorm's default, GPT-2's layer_norm_epsilon


# positions -> (layout, the norm and MLP that layout has): one table for the choice and the refusals
LAYOUTS = {"rope": ("llama", "Llama", {"norm": "rmsnorm", "mlp": "swiglu"}),
           "learned": ("gpt2", "GPT-2", {"norm": "layernorm", "mlp": "gelu"})}


def export_layout(cfg: ModelConfig) -> str:
    """"llama" or "gpt2": the standard layout `cfg` fits; NslmError naming the setting that fits none."""
    if cfg.arch != "transformer":
        raise NslmError(f"{cfg.arch.upper()} models have no transformers class to export to; only Transformer "
                        "runs export (the Llama or GPT-2 layout)")
    if cfg.pos_encoding not in LAYOUTS:
        raise NslmError(f"model.pos_encoding={cfg.pos_encoding} maps onto no standard architecture; "
                        "export needs rope (Llama layout) or learned (GPT-2 layout)")
    layout, title, needs = LAYOUTS[cfg.pos_encoding]
    for field, value in needs.items():
        if getattr(cfg, field) != value:
            raise NslmError(f"model.{field}={getattr(cfg, field)} with {cfg.pos_encoding} positions maps onto no "
                            f"standard architecture; the {title} layout needs model.{field}={value}")
    return layout


# ---------------------------------------------------------------- rotary layouts
def to_interleaved(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Rows of a q/k projection (or bias) from rotate-half pairs (i, i+hd/2) to neighbour pairs (2i, 2i+1)."""
    shape = w.shape
    return w.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).transpose(1, 2).reshape(shape)


def from_interleaved(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """The inverse of `to_interleaved`: neighbour pairs back to rotate-half pairs."""
    shape = w.shape
    return w.reshape(n_head, shape[0] // n_head // 2, 2, *shape[1:]).transpose(1, 2).reshape(shape)


# ---------------------------------------------------------------- Llama
def llama_config(cfg: ModelConfig, eot_id: int) -> dict:
    """transformers' LlamaConfig settings for `cfg` (end-of-story as bos, eos and pad)."""
    return {
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model, "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head, "num_key_value_heads": cfg.n_head,
        "max_position_embeddings": cfg.context_length, "rms_norm_eps": RMS_EPS, "hidden_act": "silu",
        "rope_theta": float(cfg.rope_base), "tie_word_embeddings": True, "attention_bias": bool(cfg.bias),
        "mlp_bias": bool(cfg.bias), "bos_token_id": eot_id, "eos_token_id": eot_id, "pad_token_id": eot_id,
    }


def nslm_to_llama(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our Transformer's state dict under LlamaForCausalLM's names (no lm_head: it is tied)."""
    d = cfg.d_model
    out = {"model.embed_tokens.weight": state["tok_emb.weight"], "model.norm.weight": state["norm_f.weight"]}
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        for kind in ("weight", "bias") if cfg.bias else ("weight",):
            q, k, v = state[f"{ours}attn.qkv.{kind}"].split(d, dim=0)
            out |= {f"{theirs}self_attn.q_proj.{kind}": q, f"{theirs}self_attn.k_proj.{kind}": k,
                    f"{theirs}self_attn.v_proj.{kind}": v,
                    f"{theirs}self_attn.o_proj.{kind}": state[f"{ours}attn.proj.{kind}"]}
            for name in ("gate", "up", "down"):
                out[f"{theirs}mlp.{name}_proj.{kind}"] = state[f"{ours}mlp.{name}.{kind}"]
        out[f"{theirs}input_layernorm.weight"] = state[f"{ours}norm1.weight"]
        out[f"{theirs}post_attention_layernorm.weight"] = state[f"{ours}norm2.weight"]
    return {k: v.detach().to(torch.float32).contiguous() for k, v in out.items()}


def llama_to_nslm(tensors: dict[str, torch.Tensor], n_layer: int, n_head: int, n_kv_head: int) -> dict[str, torch.Tensor]:
    """LlamaForCausalLM-named tensors (rotate-half q/k) as our Transformer's state dict.

    Grouped-query attention becomes plain multi-head attention by giving every query head its own copy
    of its group's key and value rows: the same numbers, one layout.
    """
    state = {"tok_emb.weight": tensors["model.embed_tokens.weight"], "norm_f.weight": tensors["model.norm.weight"]}
    group = n_head // n_kv_head
    for i in range(n_layer):
        theirs, ours = f"model.layers.{i}.", f"blocks.{i}."
        q = tensors[f"{theirs}self_attn.q_proj.weight"]
        k, v = (tensors[f"{theirs}self_attn.{n}_proj.weight"] for n in ("k", "v"))
        k, v = (x.reshape(n_kv_head, -1, x.shape[-1]).repeat_interleave(group, dim=0).reshape(q.shape) for x in (k, v))
        state[f"{ours}attn.qkv.weight"] = torch.cat([q, k, v], dim=0)
        state[f"{ours}attn.proj.weight"] = tensors[f"{theirs}self_attn.o_proj.weight"]
        for name in ("gate", "up", "down"):
            state[f"{ours}mlp.{name}.weight"] = tensors[f"{theirs}mlp.{name}_proj.weight"]
        state[f"{ours}norm1.weight"] = tensors[f"{theirs}input_layernorm.weight"]
        state[f"{ours}norm2.weight"] = tensors[f"{theirs}post_attention_layernorm.weight"]
    return {k: v.to(torch.float32).contiguous() for k, v in state.items()}


# ---------------------------------------------------------------- GPT-2
def gpt2_config(cfg: ModelConfig, eot_id: int) -> dict:
    """transformers' GPT2Config settings for `cfg`: exact GELU (ours is erf-based, not GPT-2's tanh)."""
    return {
        "vocab_size": cfg.vocab_size, "n_positions": cfg.context_length, "n_embd": cfg.d_model,
        "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": cfg.d_ff, "activation_function": "gelu",
        "layer_norm_epsilon": LAYERNORM_EPS, "tie_word_embeddings": True, "resid_pdrop": 0.0,
        "embd_pdrop": 0.0, "attn_pdrop": 0.0, "bos_token_id": eot_id, "eos_token_id": eot_id, "pad_token_id": eot_id,
    }


def nslm_to_gpt2(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our learned-position Transformer's state dict under GPT2LMHeadModel's names (zeros for absent biases)."""
    def bias(name: str, size: int) -> torch.Tensor:
        return state.get(name, torch.zeros(size))

    out = {"transformer.wte.weight": state["tok_emb.weight"], "transformer.wpe.weight": state["pos_emb.weight"],
           "transformer.ln_f.weight": state["norm_f.weight"],
           "transformer.ln_f.bias": bias("norm_f.bias", cfg.d_model)}
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        pairs = {"attn.c_attn": "attn.qkv", "attn.c_proj": "attn.proj", "mlp.c_fc": "mlp.up", "mlp.c_proj": "mlp.down"}
        for gpt2_name, our_name in pairs.items():
            weight = state[f"{ours}{our_name}.weight"]
            out[f"{theirs}{gpt2_name}.weight"] = weight.t()  # Conv1D keeps [in, out]
            out[f"{theirs}{gpt2_name}.bias"] = bias(f"{ours}{our_name}.bias", weight.shape[0])
        for gpt2_name, our_name in (("ln_1", "norm1"), ("ln_2", "norm2")):
            out[f"{theirs}{gpt2_name}.weight"] = state[f"{ours}{our_name}.weight"]
            out[f"{theirs}{gpt2_name}.bias"] = bias(f"{ours}{our_name}.bias", cfg.d_model)
    return {k: v.detach().to(torch.float32).contiguous() for k, v in out.items()}
