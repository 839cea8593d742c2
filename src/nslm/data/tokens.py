"""Token files: `train.bin` / `valid.bin`, and `dev.bin` where a dev split was carved (raw little-endian
ids, end-of-story id after every story), and their header `meta.json`, as docs/ARCHITECTURE.md specifies:
written here, and read only through `DataFolder`, whose splits are memmaps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from nslm.atomic import atomic_path, atomic_write_json
from nslm.errors import NslmError
from nslm.tokenizer import tokenizer_file_sha256

FORMAT = "nslm-tokens"
VERSION = 1
SPLITS = ("train", "valid")
# The dev split (stories carved from the training input to pick checkpoints and recipes by) is optional:
# folders made before it existed have none and read exactly as before, so the version stays 1.
DEV = "dev"
ALL_SPLITS = ("train", DEV, "valid")
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


class TokenSplit:
    """One split's token ids (`ids`, a read-only little-endian memmap) and its header entry's counts."""

    def __init__(self, name: str, ids: np.ndarray, stories: int, nbytes: int):
        self.name, self.ids, self.stories, self.bytes = name, ids, stories, nbytes

    def __len__(self) -> int:
        return len(self.ids)


class DataFolder:
    """A data folder made by `nslm data prepare`, read through its header `meta.json`.

    The one reader of the format in docs/ARCHITECTURE.md ("Data folder"): training, evaluation, the GUI
    and the tests open data folders through it. A missing, foreign or corrupt header is an NslmError.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise NslmError(f"data folder {self.path} does not exist; make one with nslm data prepare")
        self.meta = _read_header(self.path)

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def eot_id(self) -> int:
        return int(self.meta["eot_id"])

    @property
    def tokenizer_sha256(self) -> str:
        return self.meta["tokenizer_sha256"]

    @property
    def dtype(self) -> np.dtype:
        """The ids' dtype, little-endian whatever this machine's byte order."""
        return np.dtype(self.meta["dtype"]).newbyteorder("<")

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits this folder holds: train and valid, and dev where `nslm data prepare` carved one."""
        return tuple(s for s in ALL_SPLITS if s in SPLITS or isinstance(self.meta.get(s), dict))

    @property
    def has_dev(self) -> bool:
        return DEV in self.splits

    @property
    def selection_split(self) -> str:
        """The split that picks checkpoints and recipes: dev when the folder has one, else valid (older folders)."""
        return DEV if self.has_dev else "valid"

    def split(self, name: str = "train") -> TokenSplit:
        """The ids of `name` (`train`, `valid`, or `dev` where present) as a read-only memmap, checked against
        the header."""
        if name not in self.splits or not isinstance(self.meta.get(name), dict):
            raise NslmError(f"{self.path}/meta.json has no split {name!r}; splits are {', '.join(self.splits)}")
        info = self.meta[name]
        path = self.path / info.get("file", f"{name}.bin")
        if not path.is_file():
            raise NslmError(f"token file {path} is missing; remake the folder with nslm data prepare")
        size = path.stat().st_size
        if size != info.get("tokens", -1) * self.dtype.itemsize:
            raise NslmError(f"{path} holds {size} bytes but meta.json promises {info.get('tokens')} "
                            f"{self.meta['dtype']} tokens; the file is truncated or foreign")
        _check_largest_id(path, self.dtype, self.vocab_size)
        ids = np.zeros(0, dtype=self.dtype) if size == 0 else np.memmap(path, dtype=self.dtype, mode="r")
        return TokenSplit(name, ids, int(info.get("stories", 0)), int(info.get("bytes", 0)))

    def matches(self, tokenizer) -> bool:
        """Whether these token files were made with `tokenizer`: a Tokenizer, or the sha256 of its
        tokenizer.json as a run's config.json records it. A model that records no hash cannot be told
        apart and passes; every run nslm trains records one."""
        sha = getattr(tokenizer, "sha256", tokenizer)
        return not sha or sha == self.tokenizer_sha256

    def tokenizer_file_matches(self) -> bool:
        """Whether the folder's tokenizer.json is the one its token files were made with."""
        path = self.path / "tokenizer.json"
        return path.is_file() and self.matches(tokenizer_file_sha256(path))

    def check_tokenizer_file(self) -> None:
        """NslmError unless tokenizer.json is present and is the tokenizer of the token files."""
        if not (self.path / "tokenizer.json").is_file():
            raise NslmError(f"data folder {self.path} has no tokenizer.json; make it with nslm data prepare")
        if not self.tokenizer_file_matches():
            raise NslmError(f"{self.path}/tokenizer.json does not match its meta.json (the token files were made "
                            "with another tokenizer); re-run `nslm data prepare`")


# ids read per chunk when a token file's largest id is checked: 8 MB of uint16 (16 MB of uint32) at a time
CHECK_CHUNK = 1 << 22
# token files already checked in this process: (path, size, modification time, dtype, vocabulary) -> True
_CHECKED: dict[tuple, bool] = {}


def largest_id(path: str | Path, dtype: np.dtype, chunk: int = CHECK_CHUNK) -> int | None:
    """The largest id in token file `path` (None when it is empty), read in chunks of `chunk` ids into one
    buffer, so memory stays bounded whatever the file's size (a 470M-token file: about 0.4 s once cached)."""
    buffer = np.empty(chunk, dtype=dtype)
    view = memoryview(buffer).cast("B")
    largest = None
    with open(path, "rb") as f:  # a buffered file fills the whole buffer on each read but the last
        while True:
            n = f.readinto(view)
            if not n:
                return largest
            top = int(buffer[: n // dtype.itemsize].max()) if n >= dtype.itemsize else None
            if top is not None and (largest is None or top > largest):
                largest = top


def _check_largest_id(path: Path, dtype: np.dtype, vocab_size: int) -> None:
    """NslmError when token file `path` holds an id outside the vocabulary of meta.json (each file is scanned
    once per process while it stays unchanged)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, dtype.str, vocab_size)
    if key in _CHECKED:
        return
    top = largest_id(path, dtype)
    if top is not None and top >= vocab_size:
        raise NslmError(f"{path} holds token id {top}, outside the vocabulary of {vocab_size} that meta.json "
                        "declares (ids run from 0 to vocab_size - 1); the file is damaged or was made with another "
                        "tokenizer: remake the folder with nslm data prepare")
    _CHECKED[key] = True


def folder_for_tokenizer(sha256: str, folders: Iterable[str | Path], whose: str = "the model") -> Path:
    """The first of `folders` whose token files were made with the tokenizer of hash `sha256` (as a run's
    config.json records it); folders that are not data folders are passed over. NslmError naming the
    folders tried (and `whose` tokenizer was sought) when none matches."""
    if not sha256:
        raise NslmError(f"{whose} records no tokenizer hash, so no data folder can be matched to it.")
    tried = []
    for folder in folders:
        tried.append(str(folder))
        try:
            if DataFolder(folder).tokenizer_sha256 == sha256:
                return Path(folder)
        except NslmError:  # not a data folder: look at the next
            continue
    among = ", ".join(tried) or "no folders"
    raise NslmError(f"no data folder among {among} was made with {whose}'s tokenizer (sha256 {sha256[:12]}…); "
                    "make one with `nslm data tokenize FOLDER --tokenizer <its tokenizer.json>`.")


def _read_header(folder: Path) -> dict:
    path = folder / "meta.json"
    if not path.is_file():
        raise NslmError(f"{folder} is not a data folder (no meta.json); make one with nslm data prepare")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError):  # RecursionError: nested too deeply for the parser
        raise NslmError(f"{path} is not valid JSON; remake the folder with nslm data prepare") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise NslmError(f"{path} is not an nslm token header (format is not {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise NslmError(f"{path} has version {meta.get('version')!r}; this nslm reads version {VERSION}")
    for key in ("dtype", "vocab_size", "eot_id", "tokenizer_kind", "tokenizer_sha256"):
        if key not in meta:
            raise NslmError(f"{path} lacks the field {key!r}; remake the folder with nslm data prepare")
    if meta["dtype"] not in ("uint16", "uint32"):
        raise NslmError(f"{path} has an unknown dtype {meta['dtype']!r}")
    vocab, eot = meta["vocab_size"], meta["eot_id"]
    if not (isinstance(vocab, int) and not isinstance(vocab, bool) and vocab >= 1):
        raise NslmError(f"{path} has vocab_size {vocab!r}; it must be a whole number >= 1")
    if not (isinstance(eot, int) and not isinstance(eot, bool) and 0 <= eot < vocab):
        raise NslmError(f"{path} has eot_id {eot!r}; it must be a token id from 0 to vocab_size - 1 ({vocab - 1})")
    if meta["dtype"] == "uint16" and vocab > 65536:
        raise NslmError(f"{path} has dtype uint16, which cannot hold the ids of a vocabulary of {vocab}")
    return meta
