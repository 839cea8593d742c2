"""Write files and folders so that a crash or an error never leaves half-written output behind."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with writing_in(path.parent):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            os.replace(tmp_path, path)
        finally:
            if tmp_path.exists():
                tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (temporary file, fsync, rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: object) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> dict | None:
    """A JSON object from `path`, or None when the file is missing, half-written or not an object."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _new_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.new")


def _old_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _folder_lock(folder: Path, mode: int) -> Iterator[bool]:
    """flock `folder` itself (no lock file is left behind). Yields whether the lock is held: False when a
    non-blocking lock is taken by another process, or when the file system cannot lock."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, mode)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock, and so does the death of the process


def writing_in(folder: Path):
    """Hold a shared lock on `folder` while writing temporaries in it: cleaning up after a crash takes the
    lock exclusively, so it never removes a temporary that a live writer is still filling (a writer on a
    file system without locks goes on unlocked; the cleaner then leaves everything alone)."""
    return _folder_lock(Path(folder), fcntl.LOCK_SH)


def complete_dir(path: str | os.PathLike) -> Path | None:
    """The complete copy of folder `path` to read, the one `recover_dir` would put in place: the new folder
    of a replacement that a crash cut short, else `path`, else the old folder; None when there is none.
    Writes nothing."""
    path = Path(path)
    for candidate in (_new_name(path), path, _old_name(path)):
        if candidate.is_dir():
            return candidate
    return None


def recover_dir(path: str | os.PathLike) -> None:
    """Finish a replacement of folder `path` that a crash interrupted, and remove the temporaries that
    crashed writers left beside it. Does nothing while another process is writing in the same folder."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    new, old = _new_name(path), _old_name(path)
    with _folder_lock(path.parent, fcntl.LOCK_EX | fcntl.LOCK_NB) as no_writer:
        if not no_writer:
            return
        if new.is_dir():  # renamed from its temporary only once complete, and newer than `path`
            if path.exists():
                _remove(old)
                os.replace(path, old)
            os.replace(new, path)
        elif not path.exists() and old.is_dir():
            os.replace(old, path)
        _remove(old)
        for stray in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            _remove(stray)


def remove_stray_temporaries(folder: str | os.PathLike) -> None:
    """Remove every `.*.tmp` that crashed writers left in `folder` (none is touched while one writes there)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    with _folder_lock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB) as no_writer:
        if no_writer:
            for stray in folder.glob(".*.tmp"):
                _remove(stray)


def install_dir(finished: str | os.PathLike, path: str | os.PathLike) -> None:
    """Put the complete folder `finished` (beside `path`) in place of `path`, replacing any folder there, in
    steps that `complete_dir` reads and `recover_dir` finishes after a crash: `finished` becomes `.NAME.new`,
    `path` moves to `.NAME.old`, `.NAME.new` moves to `path`."""
    path = Path(path)
    new, old = _new_name(path), _old_name(path)
    _remove(new)
    os.replace(finished, new)
    if path.exists():
        _remove(old)
        os.replace(path, old)
    os.replace(new, path)
    _remove(old)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name and rename it to `path` only if the block succeeds.

    With `replace=True` an existing `path` is swapped out after the new folder is complete. Every step
    leaves a state that `complete_dir` reads and `recover_dir` (run here first) finishes: the temporary
    becomes `.NAME.new` when complete, `path` moves to `.NAME.old`, `.NAME.new` moves to `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    with writing_in(path.parent):
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            yield tmp
            if path.exists() and not replace:
                raise FileExistsError(f"{path} appeared while it was being written")
            install_dir(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
