"""nslm: not so large language models for TinyStories.

`nslm.load(path)` returns a ready story model (see `nslm.generate`).
"""

__version__ = "0.1.0"


def load(path, device: str | None = None):
    """Load a run folder or a shipped model by name; returns a `nslm.generate.StoryModel`."""
    from nslm.generate.api import load as _load

    return _load(path, device=device)


__all__ = ["__version__", "load"]
