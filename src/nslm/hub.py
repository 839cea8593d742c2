"""The Hugging Face hub, offline: whether its host resolves, and its library's retry lines kept quiet.

Offline (no name resolution), a hub download retries five times over about 25 s and prints a line each time
before it fails. Callers ask for the local cache only when `host_resolves()` is False, inside `quiet()`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import Iterator
from urllib.parse import urlparse


def host_resolves() -> bool:
    """Whether the hub's host name (HF_ENDPOINT's, else huggingface.co) resolves."""
    from huggingface_hub import constants  # only where the hub is used

    try:
        socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname or "huggingface.co", 443)
    except (OSError, UnicodeError):
        return False
    return True


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The hub library's warnings (its retry lines) off the terminal meanwhile: nslm says in one line what
    went wrong."""
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_log.setLevel(level)
