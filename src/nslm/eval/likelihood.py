"""Validation loss, perplexity and bits per byte of a model on a data folder's validation split.

Bits per byte divide the summed negative log2-likelihood of every validation token (the end-of-story
tokens included: a model must also predict where a story ends) by the UTF-8 bytes of the story texts
(separators excluded, as `meta.json` counts them). That makes BPE, word-level and character-level models
comparable. Word-level models predict `<unk>` as one token for every rare word, which makes their loss
optimistic; the result counts those targets and gives the loss over the known tokens beside it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nslm.data.reading import read_stories
from nslm.data.tokens import DataFolder
from nslm.errors import NslmError
from nslm.eval.sampling import ratio_se
from nslm.eval.scoring import Scorer
from nslm.tokenizer import EOT


def story_byte_counts(text_path: str | Path) -> list[int]:
    """UTF-8 bytes of each story in a `<|endoftext|>`-separated text file (separator lines excluded)."""
    counts, lines = [], []
    with open(text_path, encoding="utf-8") as f:
        for line in f:
            if line.rstrip("\n") == EOT:
                counts.append(len("".join(lines).rstrip("\n").encode("utf-8")))
                lines = []
            else:
                lines.append(line)
    if "".join(lines).strip():
        counts.append(len("".join(lines).rstrip("\n").encode("utf-8")))
    return counts


def check_same_tokenizer(model_config: dict, folder: DataFolder, model_name: str, data_dir: str | Path) -> None:
    """NslmError when the data folder was tokenized by another tokenizer than the model's."""
    ours = model_config.get("tokenizer_sha256") or model_config.get("data", {}).get("tokenizer_sha256")
    if not folder.matches(ours):
        raise NslmError(
            f"{data_dir} was tokenized with another tokenizer than model {model_name}; "
            "evaluate on the data folder the model was trained on (see its config.json)."
        )


def evaluate_tokens(
    scorer: Scorer,
    tokens: np.ndarray,
    n_bytes: int,
    unk_id: int | None = None,
    stride: int | None = None,
    progress=None,
    story_bytes: list[int] | None = None,
) -> dict:
    """Loss (nats/token), perplexity, bits per token and bits per byte of `tokens` scored as one stream.

    With `story_bytes` (the UTF-8 bytes of each story the tokens hold), also the standard error of bits
    per byte over stories.
    """
    if len(tokens) == 0 or n_bytes <= 0:
        raise NslmError("the validation split holds no tokens or no bytes; prepare the data folder again.")
    tokens = np.asarray(tokens, dtype=np.int64)
    logp = scorer.stream_logprobs(tokens, stride=stride, progress=progress)
    total_nats = float(-logp.sum())
    loss = total_nats / len(tokens)
    result = {
        "tokens": int(len(tokens)),
        "bytes": int(n_bytes),
        "bytes_per_token": n_bytes / len(tokens),
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bits_per_token": loss / math.log(2),
        "bits_per_byte": total_nats / math.log(2) / n_bytes,
        "context_length": scorer.context_length,
        "stride": stride or max(1, scorer.context_length // 2),
    }
    if story_bytes is not None:
        result["bits_per_byte_se"] = story_bits_per_byte_se(logp, tokens, scorer.eot_id, story_bytes)
    if unk_id is not None:
        is_unk = tokens == unk_id
        known = int((~is_unk).sum())
        result["unk"] = {
            "tokens": int(is_unk.sum()),
            "rate": float(is_unk.mean()),
            "loss_known_tokens": float(-logp[~is_unk].sum() / known) if known else None,
            "how_counted": "each <unk> target is scored as the single <unk> token (optimistic: one token "
            "stands for every rare word); loss_known_tokens leaves those targets out",
        }
    return result


def story_bits_per_byte_se(logp: np.ndarray, tokens: np.ndarray, eot_id: int, story_bytes: list[int]) -> float | None:
    """Standard error of bits per byte with stories as the units (each story's tokens end at its EOT)."""
    ends = np.flatnonzero(tokens == eot_id) + 1
    if len(ends) != len(story_bytes):
        return None
    bits = np.add.reduceat(-logp, np.r_[0, ends[:-1]]) / math.log(2)
    return ratio_se(bits, story_bytes)


def uses_data_tokens(story_model, folder: DataFolder) -> bool:
    """Whether the data folder's token files are this model's own tokenization; when not (another
    project's model), the stories of `valid.txt` are tokenized with the model's tokenizer instead."""
    ours = story_model.config.get("tokenizer_sha256") or getattr(story_model.tokenizer, "sha256", None)
    return bool(ours) and folder.matches(ours)


def story_stream(tokenizer, stories: list[str]) -> np.ndarray:
    """`stories` in `tokenizer`'s ids, each followed by its end-of-story (or BOS) id."""
    ids: list[int] = []
    for story in stories:
        ids += list(tokenizer.encode(story)) + [tokenizer.eot_id]
    return np.asarray(ids, dtype=np.int64)


def retokenized_stream(tokenizer, data_dir: str | Path) -> tuple[np.ndarray, int, int]:
    """`valid.txt`'s stories in `tokenizer`'s ids, each followed by its end-of-story (or BOS) id, with
    the number of stories and their UTF-8 bytes."""
    path = Path(data_dir) / "valid.txt"
    if not path.is_file():
        raise NslmError(f"{path} is missing; a model with another tokenizer is scored on the story text")
    stories = list(read_stories([path]))
    return story_stream(tokenizer, stories), len(stories), sum(len(s.encode("utf-8")) for s in stories)


def raw_stories(path: str | Path) -> list[str]:
    """The stories of a published file as `nslm data prepare` reads them, before any cleaning."""
    stories = [s for s in read_stories([path]) if s]
    if not stories:
        raise NslmError(f"{path} holds no stories to score.")
    return stories


def evaluate_raw_text(story_model, path: str | Path, batch_size: int = 16, stories: list[str] | None = None) -> dict:
    """Bits per byte on a story file as it was published (no cleaning: trailing spaces, odd quotes and
    encoding damage stay), split into stories the way `nslm data prepare` reads it, every story followed
    by the end-of-story token and scored as one stream like the validation split. Beside the figure on
    the cleaned split, it says what cleaning is worth to a model scored on the published text."""
    stories = stories if stories is not None else raw_stories(path)
    tokens = story_stream(story_model.tokenizer, stories)
    story_bytes = [len(s.encode("utf-8")) for s in stories]
    scorer = Scorer(story_model.model, story_model.tokenizer.eot_id, story_model.context_length,
                    story_model.device, batch_size)
    result = evaluate_tokens(scorer, tokens, sum(story_bytes), story_bytes=story_bytes)
    return {"file": str(path), "stories": len(stories), "tokens": result["tokens"], "bytes": result["bytes"],
            "bits_per_byte": result["bits_per_byte"], "bits_per_byte_se": result.get("bits_per_byte_se"),
            "bits_per_byte_excl_eos": bits_per_byte_excl_eos(scorer, tokens, sum(story_bytes))}


def bits_per_byte_excl_eos(scorer: Scorer, tokens: np.ndarray, n_bytes: int) -> float:
    """Bits per byte over the stories' own tokens only: each story of the end-of-story-separated stream
    scored on its own after one end-of-story token, the end-of-story prediction left out, long stories in
    windows with at least half a context before each token. Comparable between models of any project."""
    ends = np.flatnonzero(tokens == scorer.eot_id)
    starts = np.concatenate([[0], ends[:-1] + 1])
    stories = [tokens[a:b].tolist() for a, b in zip(starts, ends) if b > a]
    total = sum(float(lp.sum()) for lp in scorer.token_logprobs(stories))
    return -total / math.log(2) / n_bytes


def evaluate_likelihood(story_model, data_dir: str | Path, max_tokens: int | None = None,
                        stride: int | None = None, batch_size: int = 16, raw_valid: str | Path | None = None) -> dict:
    """Likelihood figures of a loaded `StoryModel` on `data_dir`'s validation split.

    `max_tokens` keeps only the first whole stories that fit (for quick runs); their bytes are counted
    from `valid.txt`. Returns a dict with tokens, bytes, loss, perplexity, bits_per_byte,
    bits_per_byte_excl_eos and, for word-level models, the `<unk>` counts. A model with another
    tokenizer than the data folder's (another project's) is scored on `valid.txt` in its own tokens.
    With `raw_valid` (the published validation file), also `raw_text`: the
    same figures on that file's uncleaned stories (`evaluate_raw_text`).
    """
    from tqdm import tqdm

    folder = DataFolder(data_dir)
    check_same_tokenizer(story_model.config, folder, getattr(story_model, "name", "?"), data_dir)
    published = raw_stories(raw_valid) if raw_valid is not None else None  # a bad file fails before the long part
    if uses_data_tokens(story_model, folder):
        split = folder.split("valid")
        tokens, eot, n_bytes = split.ids, folder.eot_id, split.bytes
        n_stories = split.stories or int((tokens == eot).sum())
        tokenized_by = "the data folder"
    else:
        tokens, n_stories, n_bytes = retokenized_stream(story_model.tokenizer, data_dir)
        eot = story_model.tokenizer.eot_id
        tokenized_by = "the model's own tokenizer (valid.txt)"
    note = "whole validation split"
    counts = story_byte_counts(Path(data_dir) / "valid.txt") if (Path(data_dir) / "valid.txt").is_file() else []
    story_bytes = counts if len(counts) == n_stories else None
    if max_tokens and max_tokens < len(tokens):
        ends = np.flatnonzero(np.asarray(tokens[:max_tokens]) == eot)
        if len(ends) == 0:
            raise NslmError(f"--max-tokens {max_tokens} is shorter than the first validation story; raise it.")
        kept = int(len(ends))
        full_len = len(tokens)
        tokens = tokens[: int(ends[-1]) + 1]
        story_bytes = story_bytes[:kept] if story_bytes else None
        if len(counts) == n_stories and sum(counts) > 0:
            # Scale our own count to the header's so the whole-split and partial figures agree.
            n_bytes = round(sum(counts[:kept]) * (n_bytes or sum(counts)) / sum(counts))
        else:
            n_bytes = round(n_bytes * len(tokens) / full_len)
        note = f"first {kept} of {n_stories} validation stories"
        n_stories = kept
    tokens = np.asarray(tokens, dtype=np.int64)
    scorer = Scorer(story_model.model, eot, story_model.context_length, story_model.device, batch_size)
    with tqdm(total=2 * len(tokens), desc="likelihood", unit="tok", leave=False) as bar:
        result = evaluate_tokens(scorer, tokens, n_bytes, story_model.tokenizer.unk_id, stride, bar, story_bytes)
        result["bits_per_byte_excl_eos"] = bits_per_byte_excl_eos(scorer, tokens, n_bytes)
        bar.update(len(tokens))
    result.update(stories=n_stories, split="valid", data=str(data_dir), scope=note, tokenized_by=tokenized_by,
                  tokenizer_kind=getattr(story_model.tokenizer, "kind", folder.meta.get("tokenizer_kind")),
                  vocab_size=story_model.tokenizer.vocab_size, eot_id=eot)
    if raw_valid is not None:
        result["raw_text"] = evaluate_raw_text(story_model, raw_valid, batch_size, published)
    return result
