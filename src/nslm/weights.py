"""Weight files: safetensors only, written atomically, checked name by name and shape by shape on load.

Training saves through here, and generation, evaluation and the GUI load through here; nothing is
ever unpickled (a pickle can run code), and a pickle offered in place of weights gets its own sentence.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from nslm.atomic import atomic_path, complete_dir
from nslm.errors import NslmError
from nslm.models import ModelConfig

WEIGHTS_FILE = "model.safetensors"
PICKLE_MAGICS = (b"\x80", b"PK\x03\x04")  # pickle protocol 2+, torch.save's zip archive
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")
WEIGHT_DTYPES = ("F32", "F16", "BF16")  # what a float32 model can take without losing meaning


def state_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as contiguous CPU tensors, ready for `safetensors.save_file`."""
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def save_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Write the model's weights to `path` (safetensors) atomically."""
    with atomic_path(path) as tmp:
        save_file(state_tensors(model), str(tmp), metadata={"format": "pt", "writer": "nslm"})


def _refuse_missing_or_pickle(path: Path, what: str) -> None:
    if not path.is_file():
        raise NslmError(f"{what} file {path} is missing")
    with open(path, "rb") as f:
        head = f.read(9)
    if _is_pickle(head, path.stat().st_size):
        raise NslmError(f"{path} is a pickle (torch.save) file, which nslm never loads because it can run code; "
                        "save the weights with safetensors instead")


def _corrupt(path: Path, what: str, exc: Exception) -> NslmError:
    return NslmError(f"{what} file {path} is corrupt or not a safetensors file ({str(exc).splitlines()[0]})")


def read_safetensors(path: str | Path, what: str = "weights") -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; a missing, corrupt or pickled file is one clear NslmError."""
    path = Path(path)
    _refuse_missing_or_pickle(path, what)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _corrupt(path, what, exc) from None


def read_header(path: str | Path, what: str = "weights") -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, dtype such as "F32") of every tensor of a safetensors file, from its header alone."""
    path = Path(path)
    _refuse_missing_or_pickle(path, what)
    try:
        with safe_open(str(path), "pt") as f:
            slices = {name: f.get_slice(name) for name in f.keys()}
            return {name: (tuple(s.get_shape()), s.get_dtype()) for name, s in slices.items()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _corrupt(path, what, exc) from None


def _check_float(path: Path, header: dict) -> None:
    for name, (_, dtype) in header.items():
        if dtype not in WEIGHT_DTYPES:
            raise NslmError(f"{path} holds {name} as {dtype}; nslm models compute in float32 (float16 and bfloat16 "
                            "are widened exactly), and casting integer or 8-bit weights would give garbage text")


def check_weights_fit(path: str | Path, cfg: ModelConfig) -> None:
    """Before a model is built: the weights file must hold floats, as many as the config's model has. A
    config.json edited to claim a huge model beside small weights is refused from the header, at once."""
    path = Path(path)
    header = read_header(path)
    _check_float(path, header)
    counts = cfg.param_counts()
    found = sum(math.prod(shape) for shape, _ in header.values())
    if counts is not None and found != counts["total"]:
        raise NslmError(f"{path} holds {found:,} weights but config.json describes a model of {counts['total']:,} "
                        "parameters; the config and the weights do not belong together")


def _is_pickle(head: bytes, size: int) -> bool:
    """Whether a file starting with `head` is a pickle rather than safetensors. A safetensors file starts
    with its header's length (8 bytes, little-endian) and then `{`; that length may well begin with 0x80."""
    if head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8:
        return False
    return head.startswith(PICKLE_MAGICS)


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load safetensors weights into `model`, checking every name, shape and dtype (from the header, before
    reading), and that every weight is a finite number."""
    path = Path(path)
    header = read_header(path)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = sorted(set(expected) - set(header))
    extra = sorted(set(header) - set(expected))
    if missing or extra:
        name = (missing or extra)[0]
        raise NslmError(f"{path} does not fit this model's config: tensor {name!r} is "
                        f"{'missing' if missing else 'unexpected'}; it belongs to another model")
    for name, (shape, _) in header.items():
        if shape != expected[name]:
            raise NslmError(f"{path} does not fit this model's config: {name} has shape {shape}, "
                            f"the config needs {expected[name]}")
    _check_float(path, header)
    tensors = read_safetensors(path)
    for name, tensor in tensors.items():
        if not torch.isfinite(tensor).all():
            raise NslmError(f"{path} holds NaN or infinite values in {name}; these weights are damaged (a run that "
                            "diverged?), load another checkpoint")
    model.load_state_dict(tensors, strict=True)


def find_weights(folder: Path) -> Path:
    """The weights of a run folder: the best checkpoint, else the latest (`last/`); a pickle is refused."""
    last = complete_dir(folder / "last")  # also the copy a crash left in the middle of replacing last/
    for candidate in (folder / WEIGHTS_FILE, (last or folder / "last") / WEIGHTS_FILE):
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
