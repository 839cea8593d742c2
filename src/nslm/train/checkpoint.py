"""Training checkpoints as safetensors + JSON only: `last/` holds weights, optimizer tensors and a JSON
file of scalars. Weight files themselves are `nslm.weights`' business.

Nothing here unpickles. Files are written atomically; `last/` is built as a whole folder and renamed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from nslm.atomic import atomic_dir
from nslm.errors import NslmError
from nslm.weights import WEIGHTS_FILE, load_weights, read_safetensors, state_tensors


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
        save_file(state_tensors(model), str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
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
    load_weights(model, last / WEIGHTS_FILE)
    tensors = read_safetensors(last / "state.safetensors", "training state")
    optimizer_from_files(optimizer, tensors, state.pop("optimizer", {}))
    rng = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
    return state, rng
