"""The Python face of generation: `nslm.load(path_or_name)` -> StoryModel -> Story.

A run folder (or a shipped model under src/nslm/pretrained/<name>/) holds config.json, tokenizer.json
and model.safetensors; nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator

import torch

from nslm.device import as_device
from nslm.errors import NslmError
from nslm.interop.foreign import detect_foreign, is_foreign, load_foreign
from nslm.models import ModelConfig, build_model
from nslm.sampling import check_seed, generate_batch_ids, generate_ids
from nslm.tokenizer import Tokenizer, tokenizer_file_sha256
from nslm.weights import check_weights_fit, find_weights, load_weights

_LINE_INDENT = re.compile(r"\n[ \t]+")


@dataclass
class Story:
    """A generated story: `text` is prompt + completion, formatted; `ended` says it reached end-of-story."""

    text: str
    prompt: str
    completion: str
    n_tokens: int
    ended: bool
    prompt_truncated: bool = False

    def __str__(self) -> str:
        return self.text


def format_story(text: str) -> str:
    """Story-level touches on decoded text: no outer whitespace, no spaces opening a line, no U+FFFD (bytes
    that a sampled byte-level token sequence left as no whole character), and a capital first letter."""
    text = _LINE_INDENT.sub("\n", text.replace("\ufffd", "")).strip()
    for i, ch in enumerate(text):
        if ch.isalpha():
            return text[:i] + ch.upper() + text[i + 1 :]
        if not (ch in "\"'“‘(" or ch.isspace()):
            break
    return text


class StoryStream:
    """Iterate to get text pieces as they are generated; afterwards `.story` holds the whole Story."""

    def __init__(self, model: "StoryModel", prompt_ids: list[int], prompt_text: str, truncated: bool, **options):
        self._model = model
        self._prompt_ids = prompt_ids
        self._prompt_text = prompt_text
        self._options = options
        self.prompt_truncated = truncated
        self.story: Story | None = None

    def __iter__(self) -> Iterator[str]:
        tok = self._model.tokenizer
        ids = list(self._prompt_ids)
        start = 0 if self._prompt_ids[0] != tok.eot_id else 1  # an unconditional start shows no text
        emitted = ""
        options = dict(self._options)
        max_tokens = options.pop("max_tokens")
        for token in generate_ids(self._model.model, self._prompt_ids, max_tokens, tok.eot_id, **options):
            ids.append(token)
            # emit only text that later tokens cannot change: what decoding without the newest token agrees on
            now = format_story(tok.decode(ids[start:]))
            before = format_story(tok.decode(ids[start:-1]))
            stable = _common_prefix(now, before).rstrip("\ufffd")
            if stable.startswith(emitted) and len(stable) > len(emitted):
                yield stable[len(emitted) :]
                emitted = stable
        self.story = make_story(tok, self._prompt_ids, self._prompt_text, self.prompt_truncated, ids[len(self._prompt_ids) :],
                                max_tokens)
        if self.story.text.startswith(emitted) and len(self.story.text) > len(emitted):
            yield self.story.text[len(emitted) :]


def make_story(tok, prompt_ids: list[int], prompt_text: str, truncated: bool, new_ids: list[int], max_tokens: int) -> Story:
    """The Story of `new_ids` generated after `prompt_ids` (fewer than `max_tokens`: it ended by itself)."""
    start = 0 if prompt_ids[0] != tok.eot_id else 1  # an unconditional start shows no text
    text = format_story(tok.decode(prompt_ids[start:] + new_ids))
    shown_prompt = format_story(tok.decode(prompt_ids[start:]))
    completion = text[len(shown_prompt) :] if text.startswith(shown_prompt) else tok.decode(new_ids)
    return Story(text=text, prompt=shown_prompt if truncated else prompt_text, completion=completion,
                 n_tokens=len(new_ids), ended=len(new_ids) < max_tokens, prompt_truncated=truncated)


def _common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return a[:n]


class StoryModel:
    """A trained model with its tokenizer, ready to tell stories."""

    def __init__(self, model: torch.nn.Module, tokenizer, config: dict, device: torch.device, name: str):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.device = device
        self.name = name
        self.context_length = model.cfg.context_length

    def __repr__(self) -> str:
        return f"StoryModel({self.name!r}, {self.model.cfg.arch}, {self.model.param_counts()['total']:,} params)"

    def encode_prompt(self, prompt: str, unconditional: bool = False) -> tuple[list[int], bool]:
        """Prompt ids (left-truncated to the context window) and whether they were truncated."""
        eot = self.tokenizer.eot_id
        if unconditional:
            return [eot], False
        if prompt is None or not str(prompt).strip():
            raise NslmError("the prompt is empty; give the beginning of a story, e.g. \"Once upon a time\"")
        prompt = str(prompt).strip()
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate, e.g. half of an emoji pasted from a broken source
            raise NslmError(f"the prompt holds a broken character at position {exc.start + 1} "
                            "(half of a character pair); delete it or type it again") from None
        ids = self.tokenizer.encode(prompt)
        if not ids:
            raise NslmError("the prompt encodes to no tokens; give the beginning of a story in words")
        # in training every story follows an end-of-story token, so one before the prompt marks a story start
        ids = [eot] + ids
        if len(ids) > self.context_length:
            return ids[-self.context_length :], True
        return ids, False

    def stream(self, prompt: str, max_tokens: int = 300, temperature: float = 0.8, top_k: int | None = None,
               top_p: float | None = None, seed: int | None = None, use_cache: bool = True,
               unconditional: bool = False) -> StoryStream:
        """Text pieces as they are generated (their concatenation is the formatted story); after the
        loop, the returned object's `.story` is the Story."""
        check_options(max_tokens, temperature, top_k, top_p, seed)
        ids, truncated = self.encode_prompt(prompt, unconditional)
        return StoryStream(self, ids, str(prompt or "").strip(), truncated, max_tokens=max_tokens,
                           temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, use_cache=use_cache)

    def generate(self, prompt: str, max_tokens: int = 300, temperature: float = 0.8, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None, use_cache: bool = True,
                 unconditional: bool = False) -> Story:
        """The whole story for `prompt` (stops at end-of-story or after `max_tokens` new tokens)."""
        stream = self.stream(prompt, max_tokens, temperature, top_k, top_p, seed, use_cache, unconditional)
        for _ in stream:
            pass
        return stream.story


    def generate_batch(self, prompts: list[str], max_tokens: int = 300, temperature: float = 0.8,
                       top_k: int | None = None, top_p: float | None = None,
                       seeds: list[int | None] | None = None) -> list[Story]:
        """`generate(prompts[i], seed=seeds[i])` for every prompt, decoded together as one batch (the same
        stories: each row reads its prompt alone, then steps with its own position and generator)."""
        seeds = list(seeds) if seeds is not None else [None] * len(prompts)
        if len(seeds) != len(prompts):
            raise NslmError(f"give one seed per prompt: {len(prompts)} prompts but {len(seeds)} seeds")
        for seed in seeds:
            check_options(max_tokens, temperature, top_k, top_p, seed)
        encoded = [self.encode_prompt(p) for p in prompts]
        new = generate_batch_ids(self.model, [ids for ids, _ in encoded], max_tokens, self.tokenizer.eot_id,
                                 temperature, top_k, top_p, seeds)
        return [make_story(self.tokenizer, ids, str(p).strip(), truncated, out, max_tokens)
                for p, (ids, truncated), out in zip(prompts, encoded, new)]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_options(max_tokens, temperature, top_k=None, top_p=None, seed=None) -> None:
    """The sampling settings every face accepts; NslmError with one sentence for a bad one."""
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise NslmError(f"max_tokens must be a positive whole number, not {max_tokens!r}")
    if not _number(temperature) or temperature < 0:
        raise NslmError(f"temperature must be 0 (greedy) or a positive number, not {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise NslmError(f"top_k must be a positive whole number, not {top_k!r}")
    if top_p is not None and not (_number(top_p) and 0 < top_p <= 1):
        raise NslmError(f"top_p must be in (0, 1], not {top_p!r}")
    if seed is not None:
        check_seed(seed)


# ---------------------------------------------------------------- finding and loading
def pretrained_root() -> Path:
    """The folder of the models shipped inside the package (src/nslm/pretrained/)."""
    return Path(str(resources.files("nslm") / "pretrained"))


def list_shipped() -> list[str]:
    """Names of the models shipped inside the package (src/nslm/pretrained/<name>/)."""
    root = pretrained_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "config.json").is_file())


def resolve(path_or_name: str | Path) -> Path:
    """A run folder path, or the folder of the shipped model with that name."""
    path = Path(path_or_name)
    if path.exists():
        return path
    if str(path_or_name) in list_shipped():
        return pretrained_root() / str(path_or_name)
    shipped = list_shipped()
    hint = f"; shipped models: {', '.join(shipped)}" if shipped else ""
    raise NslmError(f"no run folder or shipped model called {str(path_or_name)!r}{hint}")


def load(path_or_name: str | Path, device: str | torch.device | None = None) -> StoryModel:
    """Load a run folder, a shipped model by name, or another project's model (`hf:DIR`,
    `llama2c:FILE.bin`, or a runs-folder subfolder holding one); any missing or corrupt file is one NslmError."""
    if is_foreign(path_or_name):
        dev = as_device(device)
        foreign = load_foreign(str(path_or_name), dev)
        return StoryModel(foreign.model, foreign.tokenizer, foreign.config, dev, name=foreign.name)
    folder = resolve(path_or_name)
    if detect_foreign(folder):  # another project's model kept in the runs folder
        return load(detect_foreign(folder), device)
    if folder.is_file():
        raise NslmError(f"{folder} is a file; give the run folder that holds config.json and model.safetensors")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise NslmError(f"{folder} has no config.json; it is not a run folder made by nslm train")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        model_cfg = ModelConfig.from_dict(config["model"])
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
        raise NslmError(f"{config_path} is corrupt or not an nslm run config") from None
    except NslmError as exc:  # a setting the model cannot have: say which file holds it
        raise NslmError(f"{config_path}: {exc}") from None
    tok_path = folder / "tokenizer.json"
    if not tok_path.is_file():
        raise NslmError(f"{folder} has no tokenizer.json; copy it from the run's data folder")
    expected_sha = config.get("tokenizer_sha256")
    if expected_sha and tokenizer_file_sha256(tok_path) != expected_sha:
        raise NslmError(f"{tok_path} is not the tokenizer this model was trained with (its hash differs from config.json)")
    try:
        tokenizer = Tokenizer.load(tok_path)
    except NslmError:
        raise
    except Exception as exc:  # the tokenizers library raises its own exception types
        raise NslmError(f"{tok_path} is corrupt ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if tokenizer.vocab_size != model_cfg.vocab_size:
        raise NslmError(f"{tok_path} has {tokenizer.vocab_size} tokens but the model expects {model_cfg.vocab_size}")
    weights = find_weights(folder)
    check_weights_fit(weights, model_cfg)  # from the file's header, before the config's model takes memory
    model = build_model(model_cfg)
    load_weights(model, weights)
    dev = as_device(device)
    model.to(dev).eval()
    return StoryModel(model, tokenizer, config, dev, name=folder.name)
