"""Check, before any work starts, that a command's output location can be written.

A command that fails only when it finally writes has wasted the user's time and may name a temporary
file in its error; checking the nearest existing parent first gives one clear sentence instead.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from nslm.errors import NslmError

# Options through which a command names what it writes; `nslm.cli.main` checks each one it finds.
OUTPUT_OPTIONS = ("out", "json", "index_dir")


def check_output_location(path: str | os.PathLike, flag: str) -> None:
    """NslmError unless `path` could be created: its nearest existing parent must be a folder that
    accepts new entries (tried with a probe folder that is removed at once, so nothing is left)."""
    path = Path(path)
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise NslmError(f"cannot write {flag} {path}: {parent} is a file, not a folder; choose another {flag}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".nslm-probe-", dir=parent))
    except OSError as exc:
        raise NslmError(f"cannot write {flag} {path}: nothing can be created in {parent} ({exc.strerror}); "
                        f"choose another {flag}") from None


# Output options that name a file, not a folder: `--json` always; `--out` where a subcommand says so
# (`parser.set_defaults(out_is_file=True)`).
FILE_OPTIONS = ("json",)


def check_output_options(args) -> None:
    """Check every output option (`--out`, `--json`, `--index-dir`) set on a parsed command line; one that
    names a file must not be an existing folder (found before the work, not when the result is written)."""
    for name in OUTPUT_OPTIONS:
        value = getattr(args, name, None)
        if value and value != "-":
            flag = "--" + name.replace("_", "-")
            check_output_location(value, flag)
            is_file = name in FILE_OPTIONS or (name == "out" and getattr(args, "out_is_file", False))
            if is_file and Path(value).is_dir():
                raise NslmError(f"{flag} {value} is a folder; give the name of a file to write")


def check_replaceable(out: str | os.PathLike, flag: str, kind: str, looks_like, sources=()) -> None:
    """Before `--overwrite` replaces `out`: NslmError when `out` is, or holds, one of `sources` (what the
    command reads), or when it exists and is neither empty nor `kind` (`looks_like(path)` says whether it is
    an earlier output of the same kind). So a mistyped path never deletes a user's folder or file."""
    target = Path(out).resolve()
    for source in sources:
        read = Path(source).resolve()
        if read == target or target in read.parents:
            raise NslmError(f"{flag} {out} is or holds {source}, which this command reads; choose another {flag}")
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        return
    if not looks_like(target):
        raise NslmError(f"{flag} {out} exists and is not {kind}, so --overwrite does not replace it; "
                        f"choose another {flag} or remove it yourself")
