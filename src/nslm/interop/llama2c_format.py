"""Read-only readers of Karpathy's llama2.c files: the version-0 checkpoint and `tokenizer.bin`.

Checkpoint (`run.c`'s legacy layout): seven little-endian int32 (dim, hidden_dim, n_layers, n_heads,
n_kv_heads, vocab_size, seq_len; a negative vocab_size means the classifier is not the embedding), then
float32 tensors in a fixed order, each stored as a PyTorch Linear weight ([out, in], row-major).
Tokenizer: int32 max_token_length, then per token a float32 merge score, an int32 length and the bytes
of its piece (sentencepiece's `▁` already turned into a space). Nothing is executed or unpickled.
"""

from __future__ import annotations

import hashlib
import heapq
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from nslm.errors import NslmError

HEADER = struct.Struct("<7i")
BOS_ID = 1  # llama2.c puts BOS before every story and stops generating when the model emits it
EOS_ID = 2
BYTE_OFFSET = 3  # byte fallback: byte b is token b + 3 (<0x00> .. <0xFF> follow <unk>, <s>, </s>)


@dataclass
class Llama2cHeader:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    shared_classifier: bool

    @property
    def head_size(self) -> int:
        return self.dim // self.n_heads


def tensor_shapes(h: Llama2cHeader) -> list[tuple[str, tuple[int, ...]]]:
    """Name and shape of every tensor of the file, in file order (run.c's `memory_map_weights`)."""
    L, d, hid, kv = h.n_layers, h.dim, h.hidden_dim, h.n_kv_heads * h.head_size
    shapes = [("tok_embeddings", (h.vocab_size, d)), ("rms_att", (L, d)), ("wq", (L, d, d)), ("wk", (L, kv, d)),
              ("wv", (L, kv, d)), ("wo", (L, d, d)), ("rms_ffn", (L, d)), ("w1", (L, hid, d)),
              ("w2", (L, d, hid)), ("w3", (L, hid, d)), ("rms_final", (d,)),
              ("freq_cis_real", (h.seq_len, h.head_size // 2)), ("freq_cis_imag", (h.seq_len, h.head_size // 2))]
    if not h.shared_classifier:
        shapes.append(("wcls", (h.vocab_size, d)))
    return shapes


def parse_header(raw: bytes) -> Llama2cHeader | None:
    """The header in the first 28 bytes, or None when they hold no sensible one."""
    if len(raw) < HEADER.size:
        return None
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = HEADER.unpack_from(raw)
    values = (dim, hidden, layers, heads, kv_heads, abs(vocab), seq_len)
    if min(values) < 1 or max(values) > 1 << 20 or dim % heads or heads % kv_heads or (dim // heads) % 2:
        return None
    return Llama2cHeader(dim, hidden, layers, heads, kv_heads, abs(vocab), seq_len, vocab > 0)


def weight_count(header: Llama2cHeader) -> int:
    return sum(int(np.prod(s)) for _, s in tensor_shapes(header))


def read_header(path: str | Path) -> Llama2cHeader | None:
    """The header of a version-0 checkpoint whose size fits it, else None (a cheap check, for listings)."""
    try:
        with open(path, "rb") as f:
            header = parse_header(f.read(HEADER.size))
        size = Path(path).stat().st_size
    except OSError:
        return None
    return header if header is not None and size == HEADER.size + 4 * weight_count(header) else None


def read_checkpoint(path: str | Path) -> tuple[Llama2cHeader, dict[str, np.ndarray]]:
    """The header and the float32 tensors (copies) of a llama2.c version-0 checkpoint; every weight must be finite."""
    path = Path(path)
    if not path.is_file():
        raise NslmError(f"llama2.c checkpoint {path} does not exist")
    raw = path.read_bytes()
    if raw[:4] == b"ak42":
        raise NslmError(f"{path} is a llama2.c version 1/2 checkpoint; only the version-0 (legacy) format is read")
    header = parse_header(raw)
    if header is None:
        raise NslmError(f"{path} has no valid llama2.c header; it is not a llama2.c checkpoint")
    shapes = tensor_shapes(header)
    need = weight_count(header)
    floats = np.frombuffer(raw, dtype="<f4", offset=HEADER.size)
    if len(floats) != need:
        raise NslmError(f"{path} holds {len(floats):,} weights but its header needs {need:,}; "
                        "it is truncated or not a version-0 llama2.c checkpoint")
    tensors, at = {}, 0
    for name, shape in shapes:
        n = int(np.prod(shape))
        tensors[name] = floats[at : at + n].reshape(shape).astype(np.float32)
        at += n
        if not np.isfinite(tensors[name]).all():
            raise NslmError(f"{path} holds NaN or infinite values in {name}; these weights are damaged "
                            "(a run that diverged?), load another checkpoint")
    return header, tensors


def find_tokenizer(checkpoint: str | Path) -> Path:
    """`tokenizer.bin` beside the checkpoint, else the only `tok*.bin` there."""
    folder = Path(checkpoint).parent
    if (folder / "tokenizer.bin").is_file():
        return folder / "tokenizer.bin"
    found = sorted(p for p in folder.glob("tok*.bin") if p.is_file())
    if len(found) == 1:
        return found[0]
    what = "several tok*.bin files" if found else "no tokenizer.bin or tok*.bin"
    raise NslmError(f"{folder} has {what} beside {Path(checkpoint).name}; put the model's llama2.c tokenizer "
                    "there as tokenizer.bin")


class Llama2cTokenizer:
    """llama2.c's tokenizer: sentencepiece pieces merged greedily by score, with byte fallback.

    Encoding follows `run.c`'s `encode` (a dummy space before the text, then the best-scoring adjacent
    pair merged until none is in the vocabulary), except that text already starting with a space gets
    no second one, so a continuation " word" encodes as it would inside a longer text.
    """

    kind = "llama2c"
    unk_id = None  # byte fallback: no text is ever unknown
    hf = None

    def __init__(self, pieces: Sequence[bytes], scores: Sequence[float], sha256: str):
        self.pieces = list(pieces)
        self.scores = list(scores)
        self.sha256 = sha256
        self.eot_id = BOS_ID
        self._ids = {}
        for i, piece in enumerate(self.pieces):
            self._ids.setdefault(piece, i)  # run.c's sorted lookup finds the first of equal pieces

    @classmethod
    def load(cls, path: str | Path, vocab_size: int) -> "Llama2cTokenizer":
        path = Path(path)
        raw = path.read_bytes()
        pieces, scores, at = [], [], 4
        try:
            while at < len(raw):
                score, length = struct.unpack_from("<fi", raw, at)
                at += 8
                if length < 0 or at + length > len(raw):
                    raise struct.error("piece runs past the end")
                pieces.append(raw[at : at + length])
                scores.append(score)
                at += length
        except struct.error:
            raise NslmError(f"{path} is not a llama2.c tokenizer file (truncated record {len(pieces)})") from None
        if len(pieces) != vocab_size:
            raise NslmError(f"{path} has {len(pieces)} tokens but the checkpoint expects {vocab_size}; "
                            "it is another model's tokenizer")
        return cls(pieces, scores, hashlib.sha256(raw).hexdigest())

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        if not text.startswith(" "):
            text = " " + text
        symbols: list[int] = []
        for ch in text:
            piece = ch.encode("utf-8")
            if piece in self._ids:
                symbols.append(self._ids[piece])
            else:
                symbols.extend(b + BYTE_OFFSET for b in piece)
        return self._merge(symbols)

    def _merge(self, symbols: list[int]) -> list[int]:
        """run.c's loop (merge the best-scoring pair, leftmost on ties) with a heap instead of rescans."""
        n = len(symbols)
        text = [self.pieces[s] for s in symbols]
        nxt, prev, alive = list(range(1, n + 1)), list(range(-1, n - 1)), [True] * n
        heap: list[tuple[float, int, bytes]] = []

        def push(i: int) -> None:
            j = nxt[i]
            if j < n:
                merged = text[i] + text[j]
                if merged in self._ids:
                    heapq.heappush(heap, (-self.scores[self._ids[merged]], i, merged))

        for i in range(n - 1):
            push(i)
        while heap:
            _, i, merged = heapq.heappop(heap)
            j = nxt[i] if alive[i] else n
            if j >= n or text[i] + text[j] != merged:
                continue  # a stale entry: one side was merged since
            text[i], alive[j] = merged, False
            nxt[i] = nxt[j]
            if nxt[j] < n:
                prev[nxt[j]] = i
            push(i)
            if prev[i] >= 0:
                push(prev[i])
        return [self._ids[text[i]] for i in range(n) if alive[i]]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`: BOS/EOS are separators (nothing), byte tokens are bytes, the dummy space goes."""
        out, previous = bytearray(), BOS_ID
        for i in ids:
            i = int(i)
            if i in (0, BOS_ID, EOS_ID):
                previous = i
                continue
            piece = self.pieces[i]
            if previous == BOS_ID and piece.startswith(b" "):
                piece = piece[1:]  # the dummy prefix sentencepiece added before the text
            if BYTE_OFFSET <= i < BYTE_OFFSET + 256 and piece.startswith(b"<0x"):
                piece = bytes([i - BYTE_OFFSET])
            out += piece
            previous = i
        return out.decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"Llama2cTokenizer({self.vocab_size} pieces)"
