"""Token files: `train.bin` / `valid.bin` (raw little-endian ids, end-of-story id after every story)
and their header `meta.json`, as docs/ARCHITECTURE.md specifies. Training reads them as memmaps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from nslm.atomic import atomic_path, atomic_write_json
from nslm.errors import NslmError

FORMAT = "nslm-tokens"
VERSION = 1
SPLITS = ("train", "valid")
BATCH_STORIES = 1000


def dtype_for(vocab_size: int) -> str:
    """`uint16` when every id fits in 16 bits, else `uint32`."""
    return "uint16" if vocab_size <= 65535 else "uint32"


def _batches(stories: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for story in stories:
        batch.append(story)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_tokens(tokenizer, stories: Iterable[str], path: str | Path, *, batch_size: int = BATCH_STORIES,
                 progress: bool = False) -> dict:
    """Encode `stories` in batches and append their ids (each followed by the EOT id) to `path`.

    Written atomically. Returns `{"file", "tokens", "stories", "bytes"}` where `bytes` counts the UTF-8
    bytes of the story texts.
    """
    path = Path(path)
    dtype = np.dtype(dtype_for(tokenizer.vocab_size)).newbyteorder("<")
    tokens = count = nbytes = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc=f"tokenizing {path.name}", unit=" stories", leave=False)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for batch in _batches(stories, batch_size):
            encoded = tokenizer.encode_batch(batch)
            flat: list[int] = []
            for ids in encoded:
                flat.extend(ids)
                flat.append(tokenizer.eot_id)
            np.asarray(flat, dtype=dtype).tofile(f)
            tokens += len(flat)
            count += len(batch)
            nbytes += sum(len(s.encode("utf-8")) for s in batch)
            if bar is not None:
                bar.update(len(batch))
        f.flush()
    if bar is not None:
        bar.close()
    return {"file": path.name, "tokens": tokens, "stories": count, "bytes": nbytes}


def build_meta(tokenizer, splits: dict[str, dict], extra: dict | None = None) -> dict:
    """The meta.json header for token files written with `tokenizer`."""
    meta = {"format": FORMAT, "version": VERSION, "dtype": dtype_for(tokenizer.vocab_size),
            "vocab_size": tokenizer.vocab_size, "eot_id": tokenizer.eot_id, "tokenizer_kind": tokenizer.kind,
            "tokenizer_sha256": tokenizer.sha256}
    meta.update(splits)
    if extra:
        meta.update(extra)
    return meta


def write_meta(folder: str | Path, meta: dict) -> None:
    atomic_write_json(Path(folder) / "meta.json", meta)


def read_meta(folder: str | Path) -> dict:
    """Read and check `meta.json` of a data folder; NslmError when it is missing, foreign or corrupt."""
    folder = Path(folder)
    path = folder / "meta.json"
    if not path.is_file():
        raise NslmError(f"{folder} is not a data folder (no meta.json); make one with nslm data prepare")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise NslmError(f"{path} is not valid JSON; remake the folder with nslm data prepare") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise NslmError(f"{path} is not an nslm token header (format is not {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise NslmError(f"{path} has version {meta.get('version')!r}; this nslm reads version {VERSION}")
    for key in ("dtype", "vocab_size", "eot_id", "tokenizer_kind", "tokenizer_sha256"):
        if key not in meta:
            raise NslmError(f"{path} lacks the field {key!r}; remake the folder with nslm data prepare")
    if meta["dtype"] not in ("uint16", "uint32"):
        raise NslmError(f"{path} has an unknown dtype {meta['dtype']!r}")
    return meta


def load_token_split(folder: str | Path, split: str = "train") -> np.memmap:
    """The ids of `split` (`train` or `valid`) as a read-only 1-D memmap, checked against meta.json."""
    folder = Path(folder)
    meta = read_meta(folder)
    if split not in SPLITS or not isinstance(meta.get(split), dict):
        raise NslmError(f"{folder}/meta.json has no split {split!r}; splits are {', '.join(SPLITS)}")
    info = meta[split]
    path = folder / info.get("file", f"{split}.bin")
    if not path.is_file():
        raise NslmError(f"token file {path} is missing; remake the folder with nslm data prepare")
    dtype = np.dtype(meta["dtype"]).newbyteorder("<")
    size = path.stat().st_size
    if size != info.get("tokens", -1) * dtype.itemsize:
        raise NslmError(f"{path} holds {size} bytes but meta.json promises {info.get('tokens')} "
                        f"{meta['dtype']} tokens; the file is truncated or foreign")
    if size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


class TokenFile:
    """One split of a data folder: `.ids` (memmap), `.meta`, `len()`, and random training windows."""

    def __init__(self, folder: str | Path, split: str = "train"):
        self.folder = Path(folder)
        self.split = split
        self.meta = read_meta(self.folder)
        self.ids = load_token_split(self.folder, split)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def eot_id(self) -> int:
        return int(self.meta["eot_id"])

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    def window(self, start: int, length: int) -> np.ndarray:
        """`length` ids from `start`, as int64."""
        return np.asarray(self.ids[start:start + length], dtype=np.int64)

    def random_windows(self, batch: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) int64 arrays of shape [batch, length], targets shifted by one token."""
        if len(self.ids) <= length:
            raise NslmError(f"{self.split} split has {len(self.ids)} tokens, fewer than a window of {length + 1}")
        starts = rng.integers(0, len(self.ids) - length - 1, size=batch)
        x = np.stack([self.window(s, length) for s in starts])
        y = np.stack([self.window(s + 1, length) for s in starts])
        return x, y
