"""The one exception type for mistakes a user can make (bad path, bad value, corrupt file)."""


class NslmError(Exception):
    """A problem the user can fix; the CLI prints its message as one sentence and exits non-zero."""
