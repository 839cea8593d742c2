"""The architectures nslm knows: `model.arch` in config.json -> the class that builds that model.

A model class registers itself with `@register_arch("name")` beside its definition; everything else
(building, loading, sampling, the GUI's description, counting parameters) asks the class, never the
name. docs/ARCHITECTURE.md, "Adding a model kind", lists what a class provides.
"""

from __future__ import annotations

from nslm.errors import NslmError

ARCHITECTURES: dict[str, type] = {}


def register_arch(*names: str):
    """Class decorator: build configs whose `arch` is one of `names` with this class."""

    def add(cls: type) -> type:
        for name in names:
            if ARCHITECTURES.get(name, cls) is not cls:
                raise ValueError(f"architecture {name!r} is already registered to {ARCHITECTURES[name].__name__}")
            ARCHITECTURES[name] = cls
        return cls

    return add


def unregister_arch(name: str) -> None:
    """Forget `name` (for architectures registered for a while, as tests do)."""
    ARCHITECTURES.pop(name, None)


def model_class(arch: str) -> type:
    """The class registered for `arch`; an unknown name is an NslmError listing the known ones."""
    try:
        return ARCHITECTURES[arch]
    except (KeyError, TypeError):
        raise NslmError(f"model.arch must be one of {', '.join(ARCHITECTURES)}, not {arch!r}") from None
