"""Other projects' models behind nslm's model contract: `hf:DIR` (a transformers causal LM folder, or a
hub id when there is network) and `llama2c:FILE.bin` (a llama2.c version-0 checkpoint).

Each loader returns a `ForeignModel`: a module with nslm's `forward(idx) -> (logits, loss)`,
`features(idx)`, `new_cache()` and `param_counts()`, a tokenizer with `encode`/`decode`/`eot_id`, and a
config dict; `nslm.load` wraps it into a StoryModel, so generation and every measure use it unchanged.
The story separator is the model's own: llama2.c and Llama tokenizers put BOS before every story.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open

from nslm import hub
from nslm.errors import NslmError
from nslm.interop import layouts, llama2c_format
from nslm.models import ModelConfig
from nslm.models.config import physical_memory
from nslm.models.transformer import Transformer
from nslm.weights import WEIGHT_DTYPES, read_header

PREFIXES = ("hf:", "llama2c:")


def is_foreign(spec) -> bool:
    """Whether a `--model` value names another project's model (`hf:...`, `llama2c:...`)."""
    return isinstance(spec, str) and spec.startswith(PREFIXES)


def detect_foreign(folder: str | Path) -> str | None:
    """The `hf:`/`llama2c:` spec of a folder holding another project's model (a transformers folder, or
    one llama2.c checkpoint with its tokenizer), or None; so such folders load like run folders."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    config = folder / "config.json"
    if config.is_file():
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):  # a broken run folder: its loader says what is wrong
            return None
        is_hf = isinstance(data, dict) and "model_type" in data and "model" not in data
        return f"hf:{folder}" if is_hf else None
    found = [p for p in sorted(folder.glob("*.bin")) if llama2c_format.read_header(p) is not None]
    return f"llama2c:{found[0]}" if len(found) == 1 else None


def foreign_summary(spec: str) -> dict:
    """What a model list shows of a foreign model without loading it: arch, parameters, tokenizer."""
    kind, _, target = spec.partition(":")
    if kind == "llama2c":
        h = llama2c_format.read_header(target)
        if h is None:
            return {"arch": "llama2c (unreadable)"}
        tables = 2 * h.seq_len * (h.head_size // 2)  # stored rotary tables, not weights
        return {"arch": f"llama2c {h.n_layers}L d{h.dim} rope", "params": llama2c_format.weight_count(h) - tables,
                "tokenizer": f"sentencepiece-{h.vocab_size}"}
    try:
        config = json.loads((Path(target) / "config.json").read_text(encoding="utf-8"))
        with safe_open(str(Path(target) / "model.safetensors"), framework="np") as f:
            params = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
    except (OSError, ValueError, SafetensorError):
        return {"arch": "hf (unreadable)"}
    layers = config.get("num_hidden_layers") or config.get("n_layer")
    return {"arch": f"hf {config.get('model_type', '?')} {layers}L", "params": params,
            "tokenizer": f"hf-{config.get('vocab_size', '?')}"}


def foreign_name(spec: str) -> str:
    """A short name for reports and file names: the checkpoint's stem, the folder's name, or the hub id."""
    kind, _, target = spec.partition(":")
    if kind == "llama2c" or Path(target).exists():
        return Path(target).stem if kind == "llama2c" else Path(target).name
    return target.replace("/", "--")


@dataclass
class ForeignModel:
    model: nn.Module
    tokenizer: object
    config: dict
    name: str


def load_foreign(spec: str, device: torch.device) -> ForeignModel:
    """Load `hf:DIR_OR_ID` or `llama2c:FILE.bin` onto `device`, in eval mode."""
    kind, _, target = spec.partition(":")
    if not target:
        raise NslmError(f"{spec!r} names no model; write {kind}:PATH")
    loaded = load_llama2c(target) if kind == "llama2c" else load_hf(target)
    loaded.model.to(device).eval()
    return loaded


# ---------------------------------------------------------------- llama2.c
def load_llama2c(path: str | Path) -> ForeignModel:
    """A llama2.c checkpoint as an nslm Transformer (Llama layout) with its tokenizer.bin / tok*.bin."""
    header, tensors = llama2c_format.read_checkpoint(path)
    if not header.shared_classifier:
        raise NslmError(f"{path} has a separate output classifier; nslm models tie it to the embedding")
    _check_rope_tables(header, tensors, path)
    tokenizer = llama2c_format.Llama2cTokenizer.load(llama2c_format.find_tokenizer(path), header.vocab_size)
    cfg = ModelConfig(arch="transformer", vocab_size=header.vocab_size, context_length=header.seq_len,
                      d_model=header.dim, n_layer=header.n_layers, n_head=header.n_heads, d_ff=header.hidden_dim,
                      pos_encoding="rope", norm="rmsnorm", mlp="swiglu", bias=False, rope_base=10000.0)
    model = GroupedKVTransformer(cfg, header.n_kv_heads)
    model.load_state_dict(layouts.llama_to_nslm(llama2c_as_llama(header, tensors), header.n_layers,
                                                header.n_heads, header.n_kv_heads))
    config = {"model": cfg.to_dict(), "source": f"llama2c:{path}", "llama2c_header": vars(header),
              "params": model.param_counts()}
    return ForeignModel(model, tokenizer, config, foreign_name(f"llama2c:{path}"))


class GroupedKVTransformer(Transformer):
    """Our Transformer holding a grouped-query model (each key/value head copied to its query heads);
    parameters are counted as the original stores them, without the copies."""

    def __init__(self, cfg: ModelConfig, n_kv_head: int):
        super().__init__(cfg)
        self.n_kv_head = n_kv_head

    def param_counts(self) -> dict:
        counts = super().param_counts()
        c = self.cfg
        copies = c.n_layer * 2 * (c.n_head - self.n_kv_head) * (c.d_model // c.n_head) * c.d_model
        return {**counts, "total": counts["total"] - copies, "non_embedding": counts["non_embedding"] - copies}


def llama2c_as_llama(header, tensors: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """llama2.c tensors under LlamaForCausalLM's names, q/k rows turned from neighbour to rotate-half pairs."""
    t = {k: torch.from_numpy(v) for k, v in tensors.items()}
    out = {"model.embed_tokens.weight": t["tok_embeddings"], "model.norm.weight": t["rms_final"]}
    for i in range(header.n_layers):
        p = f"model.layers.{i}."
        out |= {f"{p}self_attn.q_proj.weight": layouts.from_interleaved(t["wq"][i], header.n_heads),
                f"{p}self_attn.k_proj.weight": layouts.from_interleaved(t["wk"][i], header.n_kv_heads),
                f"{p}self_attn.v_proj.weight": t["wv"][i], f"{p}self_attn.o_proj.weight": t["wo"][i],
                f"{p}mlp.gate_proj.weight": t["w1"][i], f"{p}mlp.down_proj.weight": t["w2"][i],
                f"{p}mlp.up_proj.weight": t["w3"][i], f"{p}input_layernorm.weight": t["rms_att"][i],
                f"{p}post_attention_layernorm.weight": t["rms_ffn"][i]}
    return out


def _check_rope_tables(header, tensors, path) -> None:
    """The file's stored rotary angles must be the standard ones (base 10000) that our model computes."""
    half = header.head_size // 2
    freq = 10000.0 ** (-np.arange(half) * 2.0 / header.head_size)
    angles = np.outer(np.arange(header.seq_len), freq)
    if not np.allclose(tensors["freq_cis_real"], np.cos(angles), atol=1e-4):
        raise NslmError(f"{path} stores rotary tables of another base than 10000, which nslm does not read")


# ---------------------------------------------------------------- transformers
@dataclass
class ForeignShape:
    """What generation and scoring ask of a model's config: a window of `context_length` tokens."""

    context_length: int
    vocab_size: int
    arch: str  # transformers' model_type, for display


class HFCache:
    """transformers' key/value cache for the tokens fed so far; `reset` starts over."""

    def __init__(self):
        self.past = None
        self.pos = 0

    def reset(self) -> None:
        self.past, self.pos = None, 0


class HFCausalLM(nn.Module):
    """A transformers causal LM under nslm's model contract (a windowed model, docs/ARCHITECTURE.md)."""

    windowed = True

    def __init__(self, hf_model: nn.Module, context_length: int):
        super().__init__()
        self.hf = hf_model
        self.cfg = ForeignShape(context_length, int(hf_model.get_input_embeddings().weight.shape[0]),
                                f"hf:{hf_model.config.model_type}")

    def new_cache(self, batch_size: int = 1) -> HFCache:
        return HFCache()

    def forward(self, idx, targets=None, cache: HFCache | None = None):
        # transformers >= 5.24 names the key/value cache `cache` (formerly `past_key_values`)
        out = self.hf(input_ids=idx, cache=cache.past if cache else None, use_cache=cache is not None)
        if cache is not None:
            cache.past, cache.pos = out.cache, cache.pos + idx.shape[1]
        logits = out.logits
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def features(self, idx, cache=None):
        """The last hidden states (after the final norm), what the output head reads."""
        return self.hf.base_model(input_ids=idx).last_hidden_state

    def param_counts(self) -> dict:
        total = sum(p.numel() for p in self.hf.parameters())
        embedding = self.hf.get_input_embeddings().weight.numel()
        positions = getattr(self.hf.base_model, "wpe", None)  # GPT-2's learned positions
        if positions is not None:
            embedding += positions.weight.numel()
        return {"total": total, "embedding": embedding, "non_embedding": total - embedding}


class HFTokenizer:
    """A transformers tokenizer as nslm sees one: ids without special tokens, the story separator as eot."""

    kind = "hf"
    unk_id = None
    hf = None

    def __init__(self, tok, sha256: str | None):
        self.tok = tok
        self.sha256 = sha256
        eot = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if eot is None:
            raise NslmError("the transformers tokenizer has neither a bos nor an eos token to separate stories")
        self.eot_id: int = int(eot)

    @property
    def vocab_size(self) -> int:
        return len(self.tok)

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def encode_batch(self, texts) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)


def import_transformers(needed_by: str):
    """transformers, with its progress bars off (nslm prints its own lines)."""
    # an optional extra (nslm[hf]) and slow to import: only export and hf: models need it
    try:
        import transformers
    except ImportError:
        raise NslmError(f"{needed_by} need the transformers package; install it with pip install 'nslm[hf]'") from None
    transformers.utils.logging.disable_progress_bar()
    return transformers


# config.json settings that are sizes or counts: each, when given, is a whole number of at least 1
HF_SIZES = ("vocab_size", "hidden_size", "num_attention_heads", "num_hidden_layers", "num_key_value_heads",
            "intermediate_size", "max_position_embeddings", "head_dim", "n_positions", "n_embd", "n_head", "n_layer",
            "n_inner", "n_ctx", "num_layers", "n_layers", "d_model", "ffn_dim")
HF_LAYER_COUNTS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth", "model.ckpt")


def _hf_weight_files(folder: Path, spec: str) -> list[Path]:
    """The safetensors files of a transformers folder (one, or the shards its index names); pickles refused."""
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise NslmError(f"{spec}: {index.name} is corrupt (it needs a weight_map of tensor -> file)") from None
        if not names or not all(isinstance(n, str) and n and Path(n).name == n for n in names):
            raise NslmError(f"{spec}: {index.name} names no weight files, or files outside the folder")
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise NslmError(f"{spec}: weight shard {missing[0]} named by {index.name} is missing")
        return [folder / n for n in names]
    pickled = [n for n in PICKLED_WEIGHTS if (folder / n).is_file()]
    if pickled or any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
        found = pickled[0] if pickled else sorted(p.name for p in (*folder.glob("*.bin"), *folder.glob("*.pt")))[0]
        raise NslmError(f"{spec}: the weights are {found}, a pickle (torch.save) file, which nslm never loads because "
                        "it can run code; only safetensors weights (model.safetensors) are read")
    raise NslmError(f"{spec} has no model.safetensors; it is not a transformers model folder with safetensors weights")


def _hf_header(files: list[Path], spec: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, dtype) of every tensor in the weight files, from their headers alone."""
    header = {}
    for path in files:
        try:
            part = read_header(path)
        except NslmError as exc:
            raise NslmError(f"{spec}: {exc}") from None
        for name, (shape, dtype) in part.items():
            if dtype not in WEIGHT_DTYPES:
                raise NslmError(f"{spec}: {path.name} holds {name} as {dtype}; nslm reads float32, float16 and "
                                "bfloat16 weights only (integer or 8-bit weights would give garbage text)")
        header |= part
    if not header:
        raise NslmError(f"{spec}: the weights file holds no tensors")
    return header


def _hf_config(transformers, folder: Path, spec: str, n_tensors: int):
    """config.json, checked: an object naming a model_type, sizes that are positive whole numbers, no more
    layers than the weights have tensors; then transformers' own config of it."""
    path = folder / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NslmError(f"{spec} has no config.json; it is not a transformers model folder") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise NslmError(f"{spec}: config.json is not readable JSON ({type(exc).__name__})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("model_type"), str):
        raise NslmError(f"{spec}: config.json is not a transformers config (it needs a \"model_type\")")
    for key in HF_SIZES:
        value = raw.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise NslmError(f"{spec}: config.json's {key} must be a positive whole number, not {value!r}")
    for key in HF_LAYER_COUNTS:
        if isinstance(raw.get(key), int) and raw[key] > n_tensors:
            raise NslmError(f"{spec}: config.json's {key} is {raw[key]:,} but the weights hold only {n_tensors:,} "
                            "tensors; the config and the weights do not belong together")
    try:
        return transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # transformers and huggingface_hub raise many types for a bad setting
        raise NslmError(f"{spec}: config.json is not a valid {raw['model_type']} config ({_first_line(exc)})") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _check_hf_fits(transformers, cfg, header: dict, spec: str) -> None:
    """Build the config's model on the meta device (no memory) and compare it with the weights' headers: the
    config may not claim more parameters than the file holds, nor a tensor of another shape; a model too large
    for this machine's memory in float32 is refused before anything is allocated."""
    try:
        with torch.device("meta"):
            meta = transformers.AutoModelForCausalLM.from_config(cfg)
    except Exception as exc:
        raise NslmError(f"{spec}: config.json's model_type {cfg.model_type!r} is not a causal language model "
                        f"that transformers can build ({_first_line(exc)})") from None
    expected = {name: tuple(t.shape) for name, t in meta.state_dict().items()}
    needed = sum(p.numel() for p in meta.parameters())  # tied weights once
    cls = type(meta).__name__
    found = sum(math.prod(shape) for shape, _ in header.values())
    prefix = getattr(meta, "base_model_prefix", "") or ""

    def model_name(name: str) -> str | None:  # the model's name of a file tensor (with or without the prefix)
        stripped = name[len(prefix) + 1 :] if prefix and name.startswith(prefix + ".") else None
        return next((c for c in (name, f"{prefix}.{name}", stripped) if c in expected), None)

    if not any(model_name(name) for name in header):
        raise NslmError(f"{spec}: the weights hold no tensor of the {cls} that config.json's model_type "
                        f"{cfg.model_type!r} builds (they hold e.g. {sorted(header)[0]}), so it would be random; "
                        "only causal language models whose weights all load are read")
    if needed > found:
        raise NslmError(f"{spec}: config.json describes a {cls} of {needed:,} parameters but the weights hold only "
                        f"{found:,}; the config and the weights do not belong together")
    for name, (shape, _) in header.items():
        own = model_name(name)
        if own is not None and shape != expected[own]:
            raise NslmError(f"{spec}: the weights' {name} has shape {list(shape)} but config.json's {cls} needs "
                            f"{list(expected[own])}; the config and the weights do not belong together")
    memory = physical_memory()
    if memory is not None and 4 * found > memory:
        raise NslmError(f"{spec}: its {found:,} weights need {4 * found / 2**30:,.1f} GiB in float32, more than this "
                        f"machine's {memory / 2**30:,.1f} GiB of memory")


def _check_hf_loaded(hf_model, info: dict, spec: str) -> None:
    """Every weight of the model came from the file, fits, and is a finite number."""
    cls = type(hf_model).__name__
    for key, what in (("missing_keys", "lacks"), ("mismatched_keys", "has another shape of"),
                      ("unexpected_keys", "holds tensors this model has no place for, such as")):
        keys = sorted(str(k[0] if isinstance(k, tuple) else k) for k in (info.get(key) or ()))
        if keys:
            raise NslmError(f"{spec}: the weights {what} {keys[0]} ({len(keys)} in all), so a {cls} built from "
                            "config.json would be partly random; only causal language models whose weights all "
                            "load are read")
    if info.get("error_msgs"):
        first = _first_line(Exception(info["error_msgs"][0]))
        raise NslmError(f"{spec}: the weights do not load into a {cls} ({first})")
    for name, tensor in hf_model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise NslmError(f"{spec}: the weights hold NaN or infinite values in {name}; they are damaged "
                            "(a run that diverged?)")


def load_hf(target: str) -> ForeignModel:
    """A transformers causal LM folder (or hub id) with its tokenizer, in float32. A local folder is checked
    before anything is built: safetensors weights only (never a pickle), a config.json of sane sizes, and a
    model no larger than what the weights' headers hold; after loading, every weight must have come from the
    file and be finite."""
    transformers = import_transformers("hf: models")
    folder = Path(target)
    local = folder.is_dir()
    spec = f"hf:{target}"
    if not local and (folder.exists() or target.startswith((".", "/", "~")) or target.count("/") > 1):
        raise NslmError(f"{target} is not a folder with a transformers model (config.json and weights)")
    # offline, a hub id is looked up in the local cache only, at once, instead of after retries
    cache_only = local or not hub.host_resolves()
    logging = transformers.utils.logging
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # nslm says in one line what is wrong; transformers' warnings are noise here
    with hub.quiet():  # and the hub library's retry lines
        try:
            cfg = None
            if local:
                header = _hf_header(_hf_weight_files(folder, spec), spec)
                cfg = _hf_config(transformers, folder, spec, len(header))
                _check_hf_fits(transformers, cfg, header, spec)
            try:
                tok = transformers.AutoTokenizer.from_pretrained(target, local_files_only=cache_only)
            except Exception as exc:  # the tokenizers library raises its own exception types
                raise NslmError(f"{spec}: its tokenizer does not load ({_first_line(exc)})") from None
            try:
                extra = {"config": cfg} if cfg is not None else {}
                hf_model, info = transformers.AutoModelForCausalLM.from_pretrained(
                    target, dtype=torch.float32, local_files_only=cache_only, use_safetensors=True,
                    output_loading_info=True, **extra)
            except NslmError:
                raise
            except Exception as exc:
                raise NslmError(f"could not load transformers model {target} ({_first_line(exc)})") from None
            _check_hf_loaded(hf_model, info, spec)
        finally:
            logging.set_verbosity(verbosity)
    cfg = hf_model.config
    context = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 2048
    if not isinstance(context, int) or isinstance(context, bool) or context < 1:
        raise NslmError(f"{spec}: its context length (max_position_embeddings) must be a positive whole number, "
                        f"not {context!r}")
    tok_file = folder / "tokenizer.json"
    sha = hashlib.sha256(tok_file.read_bytes()).hexdigest() if local and tok_file.is_file() else None
    config = {"model": {"arch": cfg.model_type, "context_length": int(context), "vocab_size": int(cfg.vocab_size),
                        "transformers_class": type(hf_model).__name__}, "source": f"hf:{target}"}
    model = HFCausalLM(hf_model, int(context))
    config["params"] = model.param_counts()
    return ForeignModel(model, HFTokenizer(tok, sha), config, foreign_name(f"hf:{target}"))
