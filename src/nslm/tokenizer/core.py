"""The `Tokenizer` wrapper around a Hugging Face `tokenizers.Tokenizer`, and training for all kinds.

Kinds:
- `bpe`: byte-level BPE (GPT-2 style); every byte is in the alphabet, so decoding is exact.
- `word`: lowercased words and single punctuation marks with `<unk>`; decoding re-spaces and re-cases
  through `format_words` and the `casing.json` learned from the training text.
- `char`: one token per character seen in training, with byte fallback (`<0xNN>`) for unseen ones, so
  decoding is exact and no `<unk>` is needed.
All kinds put the end-of-story token `<|endoftext|>` at id 0.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from nslm.atomic import atomic_write_bytes, atomic_write_json
from nslm.errors import NslmError
from nslm.tokenizer.detok import EOT, format_words, learn_casing

UNK = "<unk>"
KINDS = ("bpe", "word", "char")
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]
DEFAULT_VOCAB_SIZE = {"bpe": 4096, "word": 4096, "char": None}



def tokenizer_file_sha256(path: str | Path) -> str:
    """The tokenizer hash that data folders and runs record: sha256 of the tokenizer.json bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()

class Tokenizer:
    """One trained tokenizer: encode stories to ids and decode ids to clean text."""

    def __init__(self, hf, kind: str, casing: dict[str, str] | None = None):
        if kind not in KINDS:
            raise NslmError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}")
        self.hf = hf
        self.kind = kind
        self.casing = dict(casing or {})
        eot = hf.token_to_id(EOT)
        if eot is None:
            raise NslmError(f"the tokenizer has no {EOT} token; train it with nslm tokenizer train")
        self.eot_id: int = eot
        self.unk_id: int | None = hf.token_to_id(UNK) if kind == "word" else None
        self._file_sha256: str | None = None

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def to_json(self) -> str:
        """The tokenizer.json text (the kind is read back from its model: WordLevel, BPE, BPE+byte fallback)."""
        return self.hf.to_str(pretty=True)

    @property
    def sha256(self) -> str:
        """sha256 of the tokenizer.json bytes: those `load` read, else those `save` writes."""
        if self._file_sha256 is not None:
            return self._file_sha256
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [enc.ids for enc in self.hf.encode_batch(list(texts))]

    def decode(self, ids: Iterable[int]) -> str:
        """Clean text: exact for bpe/char; word-level re-spaced and re-cased (`<unk>` stays visible)."""
        text = self.hf.decode(list(ids), skip_special_tokens=False)
        if self.kind == "word":
            return format_words(text, self.casing)
        return text

    def save(self, folder: str | Path) -> Path:
        """Write tokenizer.json (+ casing.json for word-level) into `folder`; returns tokenizer.json."""
        folder = Path(folder)
        path = folder / "tokenizer.json"
        data = self.to_json().encode("utf-8")
        atomic_write_bytes(path, data)
        self._file_sha256 = hashlib.sha256(data).hexdigest()
        if self.kind == "word":
            atomic_write_json(folder / "casing.json", dict(sorted(self.casing.items())))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        """Read a tokenizer.json (or a folder holding one) and the casing.json beside it, if any."""
        from tokenizers import Tokenizer as HFTokenizer

        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise NslmError(f"tokenizer file {path} does not exist; train one with nslm tokenizer train")
        raw = path.read_bytes()
        try:
            data = json.loads(raw)
            hf = HFTokenizer.from_str(raw.decode("utf-8"))
        except Exception as exc:  # json raises ValueError, tokenizers a bare Exception
            raise NslmError(f"{path} is not a valid tokenizer.json ({str(exc).splitlines()[0][:80]})") from exc
        kind = _guess_kind(data)
        casing = {}
        casing_path = path.with_name("casing.json")
        if kind == "word" and casing_path.is_file():
            try:
                casing = json.loads(casing_path.read_text(encoding="utf-8"))
            except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
                casing = None
            if not isinstance(casing, dict) or not all(isinstance(v, str) for v in casing.values()):
                raise NslmError(f"{casing_path} is not a JSON object of words; delete it or retrain the tokenizer")
        tokenizer = cls(hf, kind, casing)
        tokenizer._file_sha256 = hashlib.sha256(raw).hexdigest()
        return tokenizer

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"


def _guess_kind(data: dict) -> str:
    model = data.get("model", {}).get("type")
    if model == "WordLevel":
        return "word"
    if model == "BPE" and data.get("model", {}).get("byte_fallback"):
        return "char"
    return "bpe"


def min_vocab_size(kind: str) -> int:
    """The smallest vocabulary a kind can have: its special tokens (+ 256 bytes for bpe/char)."""
    return {"bpe": 1 + 256, "word": 2 + 1, "char": 1 + 256 + 1}[kind]


def check_kind_and_size(kind: str, vocab_size: int | None) -> None:
    """Raise NslmError for an unknown kind or a vocabulary too small for its special and byte tokens."""
    if kind not in KINDS:
        raise NslmError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}")
    if vocab_size is not None and vocab_size < min_vocab_size(kind):
        why = {"bpe": f"{EOT} plus the 256 byte tokens", "word": f"{EOT}, {UNK} and at least one word",
               "char": f"{EOT}, the 256 fallback byte tokens and at least one character"}[kind]
        raise NslmError(f"vocabulary size {vocab_size} is too small for a {kind} tokenizer: it needs at "
                        f"least {min_vocab_size(kind)} ({why})")


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int | None = None) -> Tokenizer:
    """Train a tokenizer of `kind` (`bpe|word|char`) on an iterable of stories (streamed, not stored).

    `vocab_size` is the total size including special tokens; None takes the kind's default (4096 for
    bpe and word, every character seen for char).
    """
    check_kind_and_size(kind, vocab_size)
    if vocab_size is None:
        vocab_size = DEFAULT_VOCAB_SIZE[kind]
    if kind == "bpe":
        return _train_bpe(texts, vocab_size)
    if kind == "word":
        return _train_word(texts, vocab_size)
    return _train_char(texts, vocab_size)


class _Counting:
    """Passes texts through while counting them, so an empty corpus is reported clearly."""

    def __init__(self, texts: Iterable[str]):
        self.texts, self.count = texts, 0

    def __iter__(self) -> Iterator[str]:
        for text in self.texts:
            self.count += 1
            yield text


def _train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    counting = _Counting(texts)
    hf.train_from_iterator(counting, trainer)
    _require_texts(counting)
    return Tokenizer(hf, "bpe")


def _word_pre_tokenizer():
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")])


def _train_word(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    from tokenizers import Tokenizer as HFTokenizer, models, normalizers, trainers

    hf = HFTokenizer(models.WordLevel(unk_token=UNK))
    hf.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    hf.pre_tokenizer = _word_pre_tokenizer()
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=[EOT, UNK], show_progress=False)
    counting = _Counting(texts)
    sample: list[str] = []

    def keep_for_casing(stream: Iterable[str]) -> Iterator[str]:
        # casing needs only a sample; the first 20,000 stories show every common name many times
        for text in stream:
            if len(sample) < 20_000:
                sample.append(text)
            yield text

    hf.train_from_iterator(keep_for_casing(counting), trainer)
    _require_texts(counting)
    vocab = hf.get_vocab()
    casing = {w: form for w, form in learn_casing(sample).items() if w in vocab}
    return Tokenizer(hf, "word", casing)


def _train_char(texts: Iterable[str], vocab_size: int | None) -> Tokenizer:
    from tokenizers import Tokenizer as HFTokenizer, decoders, models

    counts: Counter = Counter()
    counting = _Counting(texts)
    for text in counting:
        counts.update(text)
    _require_texts(counting)
    counts.pop(EOT, None)
    room = None if vocab_size is None else vocab_size - 1 - len(BYTE_TOKENS)
    chars = [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:room]
    vocab = {EOT: 0}
    for token in BYTE_TOKENS + sorted(chars):
        vocab.setdefault(token, len(vocab))
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
    hf.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    hf.add_special_tokens([EOT])
    return Tokenizer(hf, "char")


def _require_texts(counting: _Counting) -> None:
    if counting.count == 0:
        raise NslmError("no stories to train the tokenizer on; check the input files")
