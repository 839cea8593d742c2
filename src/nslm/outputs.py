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


def check_output_options(args) -> None:
    """Check every output option (`--out`, `--json`, `--index-dir`) set on a parsed command line."""
    for name in OUTPUT_OPTIONS:
        value = getattr(args, name, None)
        if value:
            check_output_location(value, "--" + name.replace("_", "-"))
