"""Checkpoints as safetensors + JSON only: weights, optimizer tensors, and a JSON file of scalars.

Nothing here unpickles. Files are written atomically; `last/` is built as a whole folder and renamed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nslm.atomic import atomic_dir, atomic_path
from nslm.errors import NslmError

PICKLE_MAGICS = (b"\x80", b"PK\x03\x04")  # pickle protocol 2+, torch.save's zip archive


def _state_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def save_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Write the model's weights to `path` (safetensors) atomically."""
    with atomic_path(path) as tmp:
        save_file(_state_tensors(model), str(tmp), metadata={"format": "pt", "writer": "nslm"})


def read_safetensors(path: str | Path, what: str = "weights") -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; a missing, corrupt or pickled file is one clear NslmError."""
    path = Path(path)
    if not path.is_file():
        raise NslmError(f"{what} file {path} is missing")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(PICKLE_MAGICS):
        raise NslmError(f"{path} is a pickle (torch.save) file, which nslm never loads because it can run code; "
                        "save the weights with safetensors instead")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise NslmError(f"{what} file {path} is corrupt or not a safetensors file ({str(exc).splitlines()[0]})") from None


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


def optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer's state dict into tensors ("opt.<param>.<name>") and JSON-able scalars."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"opt.{pid}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_files(optimizer: torch.optim.Optimizer, tensors: dict, info: dict) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for key, value in info.get("scalars", {}).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})
    except (ValueError, KeyError, RuntimeError) as exc:
        raise NslmError(f"the saved optimizer state does not fit this model ({exc})") from None


def save_last(run_dir: Path, model: torch.nn.Module, optimizer, state: dict, rng: dict[str, torch.Tensor]) -> None:
    """Write `run_dir/last/` (model, optimizer tensors + RNG states, state.json) as one atomic folder."""
    opt_tensors, opt_info = optimizer_to_files(optimizer)
    tensors = dict(opt_tensors)
    tensors.update({f"rng.{k}": v.contiguous() for k, v in rng.items()})
    with atomic_dir(run_dir / "last", replace=True) as tmp:
        save_file(_state_tensors(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        save_file(tensors, str(tmp / "state.safetensors"), metadata={"format": "pt"})
        (tmp / "state.json").write_text(json.dumps(dict(state, optimizer=opt_info), indent=2) + "\n")


def load_last(run_dir: Path, model: torch.nn.Module, optimizer) -> tuple[dict, dict[str, torch.Tensor]]:
    """Restore model and optimizer from `run_dir/last/`; returns (state.json, RNG tensors)."""
    last = run_dir / "last"
    if not (last / "state.json").is_file():
        raise NslmError(f"{run_dir} has no last/state.json to resume from; it was never checkpointed")
    try:
        state = json.loads((last / "state.json").read_text())
    except json.JSONDecodeError:
        raise NslmError(f"{last / 'state.json'} is corrupt; the run cannot be resumed") from None
    load_weights(model, last / "model.safetensors")
    tensors = read_safetensors(last / "state.safetensors", "training state")
    optimizer_from_files(optimizer, tensors, state.pop("optimizer", {}))
    rng = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
    return state, rng
