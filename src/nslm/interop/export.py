"""`nslm export RUN OUT --format hf|gguf`: an nslm Transformer as a Hugging Face transformers folder
(Llama or GPT-2 layout, no custom code) or as a GGUF file (Llama layout) for llama.cpp and friends.

The HF folder holds config.json, model.safetensors, the tokenizer (our tokenizer.json as a fast
tokenizer that puts `<|endoftext|>` before the text, as every story starts in training, and uses it as
bos, eos and pad), generation_config.json stopping at end-of-story, and a model card. Everything is
written into a temporary folder (or file) and renamed, so a failed export leaves nothing behind.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer as HFTokenizerFile
from tokenizers.processors import TemplateProcessing

from nslm.atomic import atomic_dir, read_json
from nslm.errors import NslmError
from nslm.generate.api import StoryModel, load, resolve
from nslm.interop import layouts
from nslm.interop.foreign import import_transformers, is_foreign
from nslm.interop.gguf_export import write_gguf
from nslm.outputs import check_replaceable
from nslm.tokenizer.detok import EOT
from nslm.train.metrics import read_metrics

FORMATS = ("hf", "gguf")
GENERATION = {"do_sample": True, "temperature": 0.8, "max_new_tokens": 300}  # `nslm generate`'s defaults


def load_exportable(run: str) -> tuple[StoryModel, str]:
    """The run's StoryModel on the CPU in float32, and the layout it maps onto (or one-line NslmError)."""
    if is_foreign(run):
        raise NslmError(f"{run} is already another project's model; export takes an nslm run folder or shipped model")
    story_model = load(run, device="cpu")
    return story_model, layouts.export_layout(story_model.model.cfg)


def export(run: str, out: str | Path, fmt: str = "hf", overwrite: bool = False) -> Path:
    """Write `run` to `out` in format `fmt` ("hf" folder or "gguf" file); returns `out`."""
    if fmt not in FORMATS:
        raise NslmError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise NslmError(f"{out} already exists; choose another path or pass --overwrite")
    if fmt == "gguf" and out.is_dir():
        raise NslmError(f"{out} is a folder; a GGUF export is one file: give its name, e.g. model.gguf")
    if out.exists():
        check_replaceable(out, "OUT", "an earlier GGUF file" if fmt == "gguf" else "an earlier export (a folder "
                          "with a transformers config.json)", _is_gguf if fmt == "gguf" else _is_hf_folder,
                          sources=[] if is_foreign(run) else [resolve(run)])
    story_model, layout = load_exportable(run)
    if fmt == "gguf":
        return write_gguf(story_model, layout, out, overwrite)
    return write_hf(story_model, layout, run, out, overwrite)


def _is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return path.is_file() and f.read(4) == b"GGUF"
    except OSError:
        return False


def _is_hf_folder(path: Path) -> bool:
    config = read_json(path / "config.json") if path.is_dir() else None
    return isinstance(config, dict) and isinstance(config.get("model_type"), str)


def hf_model_of(story_model: StoryModel, layout: str):
    """A transformers LlamaForCausalLM / GPT2LMHeadModel holding the run's weights, in eval mode."""
    transformers = import_transformers("exports")
    cfg, eot = story_model.model.cfg, story_model.tokenizer.eot_id
    state = story_model.model.state_dict()
    if layout == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**layouts.llama_config(cfg, eot)))
        tensors = layouts.nslm_to_llama(state, cfg)
    else:
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**layouts.gpt2_config(cfg, eot)))
        tensors = layouts.nslm_to_gpt2(state, cfg)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [m for m in missing if m != "lm_head.weight" and not m.endswith(".attn.bias")]
    if missing or unexpected:  # a mapping bug, not a user error: say which tensor
        raise RuntimeError(f"export mapping incomplete: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.tie_weights()
    model.generation_config = transformers.GenerationConfig(bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
                                                            **GENERATION)
    return model.float().eval()


def hf_tokenizer_of(story_model: StoryModel):
    """Our tokenizer as a transformers fast tokenizer that starts each text with `<|endoftext|>`."""
    transformers = import_transformers("exports")
    tok = story_model.tokenizer
    backend = HFTokenizerFile.from_str(tok.hf.to_str())
    backend.post_processor = TemplateProcessing(single=f"{EOT} $A", pair=f"{EOT} $A {EOT} $B:1",
                                                special_tokens=[(EOT, tok.eot_id)])
    extra = {"unk_token": "<unk>"} if tok.unk_id is not None else {}
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=EOT, eos_token=EOT,
                                                pad_token=EOT, model_max_length=story_model.context_length, **extra)


def write_hf(story_model: StoryModel, layout: str, run: str, out: Path, overwrite: bool = False) -> Path:
    model = hf_model_of(story_model, layout)
    tokenizer = hf_tokenizer_of(story_model)
    with atomic_dir(out, replace=overwrite) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(story_model, layout, run), encoding="utf-8")
    return out


def best_eval(run_folder: Path) -> dict:
    """The evaluation line with the lowest validation loss (the weights that were exported), or {}."""
    evals = [r for r in read_metrics(run_folder) if r.get("event") == "eval" and r.get("val_loss") is not None]
    return min(evals, key=lambda r: r["val_loss"]) if evals else {}


def model_card(story_model: StoryModel, layout: str, run: str) -> str:
    """README.md for the exported folder: what the model is, how it was trained, how to use it."""
    cfg, config = story_model.model.cfg, story_model.config
    params = story_model.model.param_counts()
    data = config.get("data") or {}
    train = config.get("train") or {}
    best = best_eval(resolve(run))
    cls = "LlamaForCausalLM" if layout == "llama" else "GPT2LMHeadModel"
    shape = (f"{cfg.n_layer} layers, width {cfg.d_model}, {cfg.n_head} heads, MLP {cfg.d_ff} ({cfg.mlp}), "
             f"{cfg.pos_encoding} positions, {cfg.norm}, context {cfg.context_length}, tied embeddings")
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-generation", "license: mit",
        "datasets:", "- roneneldan/TinyStories", "---", "",
        f"# {story_model.name}", "",
        f"A {params['total']:,}-parameter story model trained with nslm on TinyStories, exported as `{cls}` "
        f"({shape}). It writes short children's stories and ends them with `{EOT}`.", "",
        "## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
        "tok = AutoTokenizer.from_pretrained(PATH)",
        "model = AutoModelForCausalLM.from_pretrained(PATH)",
        f'ids = tok("Once upon a time", return_tensors="pt").input_ids  # starts with {EOT}, as in training',
        "out = model.generate(ids, max_new_tokens=300)  # stops at end-of-story",
        "print(tok.decode(out[0], skip_special_tokens=True))", "```", "",
        "Or with nslm: `nslm generate --model hf:PATH \"Once upon a time\"`.", "",
        "## Training", "",
        f"- tokenizer: {data.get('tokenizer_kind', story_model.tokenizer.kind)}, {cfg.vocab_size:,} tokens "
        f"(`{EOT}` is id {story_model.tokenizer.eot_id}: bos, eos and pad)",
        f"- training data: {data.get('train', {}).get('stories', '?')} stories, "
        f"{data.get('train', {}).get('tokens', '?')} tokens",
        f"- optimiser settings: lr {train.get('lr', '?')}, batch {train.get('batch_size', '?')}, "
        f"seed {train.get('seed', '?')}",
    ]
    if best:
        lines.append(f"- best validation loss {best['val_loss']:.3f} nats/token at step {best.get('step', '?')}"
                     + (f", {best['val_bpb']:.3f} bits per byte" if best.get("val_bpb") else ""))
    if story_model.tokenizer.kind == "word":
        lines.append("- word-level tokenizer: transformers decodes it with spaces around punctuation and in "
                     "lower case; nslm re-spaces and re-cases it")
    lines += ["", "Exported with `nslm export`; the logits equal nslm's to 1e-4 (tested).", ""]
    return "\n".join(lines)

