"""Weight files: safetensors only, written atomically, checked name by name and shape by shape on load.

Training saves through here, and generation, evaluation and the GUI load through here; nothing is
ever unpickled (a pickle can run code), and a pickle offered in place of weights gets its own sentence.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nslm.atomic import atomic_path
from nslm.errors import NslmError

WEIGHTS_FILE = "model.safetensors"
PICKLE_MAGICS = (b"\x80", b"PK\x03\x04")  # pickle protocol 2+, torch.save's zip archive
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")


def state_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as contiguous CPU tensors, ready for `safetensors.save_file`."""
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def save_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Write the model's weights to `path` (safetensors) atomically."""
    with atomic_path(path) as tmp:
        save_file(state_tensors(model), str(tmp), metadata={"format": "pt", "writer": "nslm"})


def read_safetensors(path: str | Path, what: str = "weights") -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; a missing, corrupt or pickled file is one clear NslmError."""
    path = Path(path)
    if not path.is_file():
        raise NslmError(f"{what} file {path} is missing")
    with open(path, "rb") as f:
        head = f.read(9)
    if _is_pickle(head, path.stat().st_size):
        raise NslmError(f"{path} is a pickle (torch.save) file, which nslm never loads because it can run code; "
                        "save the weights with safetensors instead")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise NslmError(f"{what} file {path} is corrupt or not a safetensors file ({str(exc).splitlines()[0]})") from None


def _is_pickle(head: bytes, size: int) -> bool:
    """Whether a file starting with `head` is a pickle rather than safetensors. A safetensors file starts
    with its header's length (8 bytes, little-endian) and then `{`; that length may well begin with 0x80."""
    if head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8:
        return False
    return head.startswith(PICKLE_MAGICS)


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load safetensors weights into `model`, checking every name and shape first."""
    tensors = read_safetensors(path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        name = (missing or extra)[0]
        raise NslmError(f"{path} does not fit this model's config: tensor {name!r} is "
                        f"{'missing' if missing else 'unexpected'}; it belongs to another model")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise NslmError(f"{path} does not fit this model's config: {name} has shape {tuple(tensor.shape)}, "
                            f"the config needs {tuple(expected[name].shape)}")
    model.load_state_dict(tensors, strict=True)


def find_weights(folder: Path) -> Path:
    """The weights of a run folder: the best checkpoint, else the latest (`last/`); a pickle is refused."""
    for candidate in (folder / WEIGHTS_FILE, folder / "last" / WEIGHTS_FILE):
        if candidate.is_file():
            return candidate
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise NslmError(f"{folder} has {pickles[0]} but no {WEIGHTS_FILE}; nslm only loads safetensors weights, "
                        "never pickles (they can run code)")
    raise NslmError(f"{folder} has no {WEIGHTS_FILE}; it is not a finished or checkpointed run")


def weights_sha256(model: torch.nn.Module) -> str:
    """A hash of every weight's bytes, to compare models across processes."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
