"""The one exception type for mistakes a user can make (bad path, bad value, corrupt file)."""


class NslmError(Exception):
    """A problem the user can fix; the CLI prints its message as one sentence and exits non-zero."""


def what_is_there(path) -> str:
    """How a path that is not the plain file or folder a command wanted stands: "does not exist", "is a folder,
    not a file", "is a file, not a folder", or "is not a regular file" (a device, a pipe)."""
    import os
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "does not exist"
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if stat.S_ISREG(mode):
        return "is a file, not a folder"
    return "is not a regular file"


def parse_json(text: str, place: str):
    """`text` parsed as JSON; NslmError "<place> is not valid JSON (why)" when it is not, or is nested too
    deeply to read (Python's parser recurses). `place` names the file, and the line where there is one."""
    import json

    try:
        return json.loads(text)
    except ValueError as exc:
        raise NslmError(f"{place} is not valid JSON ({getattr(exc, 'msg', exc)})") from None
    except RecursionError:
        raise NslmError(f"{place} is not usable JSON (nested too deeply)") from None
