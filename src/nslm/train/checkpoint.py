"""Training checkpoints as safetensors + JSON only: `last/` holds weights, optimizer tensors and a JSON
file of scalars. Weight files themselves are `nslm.weights`' business.

Nothing here unpickles. Files are written atomically; `last/` is built as a whole folder and renamed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

from nslm.atomic import atomic_dir, complete_dir, recover_dir, remove_stray_temporaries
from nslm.errors import NslmError
from nslm.train.optim import Combined, Muon
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
    try:
        for key, value in tensors.items():
            if key.startswith("opt."):
                _, pid, name = key.split(".", 2)
                state.setdefault(int(pid), {})[name] = value
        for key, value in info.get("scalars", {}).items():
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
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


def tidy_run_folder(run_dir: Path) -> None:
    """On start and resume: finish a `last/` replacement that a crash cut short, and remove temporaries
    that crashed writes left in the run folder."""
    recover_dir(run_dir / "last")
    remove_stray_temporaries(run_dir)


def has_checkpoint(run_dir: Path) -> bool:
    """Whether the run has a complete `last/` to resume from (also one a crash left mid-replacement)."""
    last = complete_dir(Path(run_dir) / "last")
    return last is not None and (last / "state.json").is_file()


def _whole(value, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# state.json: each field and the rule its value must follow
STATE_FIELDS = {
    "step": ("a whole number >= 0", _whole),
    "tokens": ("a whole number >= 0", _whole),
    "elapsed_s": ("a number of seconds >= 0", lambda v: _number(v) and v >= 0),
    "best_val_loss": ("null or a finite number", lambda v: v is None or _number(v)),
    "data_position": ("an object with whole numbers seed, next_step and world_size >= 1",
                      lambda v: isinstance(v, dict) and _whole(v.get("seed")) and _whole(v.get("next_step"))
                      and _whole(v.get("world_size"), 1)),
    "optimizer": ("an object with a list param_groups and an object scalars",
                  lambda v: isinstance(v, dict) and isinstance(v.get("param_groups"), list)
                  and isinstance(v.get("scalars", {}), dict)),
}


def read_state(path: Path) -> dict:
    """state.json of a checkpoint, every field checked; a wrong one is an NslmError naming it."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise NslmError(f"{path} is corrupt (not JSON); the run cannot be resumed") from None
    if not isinstance(state, dict):
        raise NslmError(f"{path} is corrupt (not a JSON object); the run cannot be resumed")
    for name, (rule, ok) in STATE_FIELDS.items():
        if name not in state or not ok(state[name]):
            raise NslmError(f"{path} is corrupt: \"{name}\" must be {rule}, not {state.get(name)!r}; "
                            "the run cannot be resumed")
    best_dev = state.get("best_dev_loss")  # only in runs whose data folder has a dev split
    if best_dev is not None and not _number(best_dev):
        raise NslmError(f"{path} is corrupt: \"best_dev_loss\" must be null or a finite number, not {best_dev!r}; "
                        "the run cannot be resumed")
    if state["data_position"]["next_step"] != state["step"]:
        raise NslmError(f"{path} is corrupt: data_position.next_step differs from step; the run cannot be resumed")
    return state


def _numbered_parameters(optimizer) -> list[tuple[torch.nn.Parameter, torch.optim.Optimizer, dict]]:
    """(parameter, the optimizer that updates it, its group) in the numbering of the optimizer's state dict:
    torch numbers parameters group by group from 0, and a Combined runs on from one part to the next."""
    parts = optimizer.parts if isinstance(optimizer, Combined) else [optimizer]
    return [(p, part, group) for part in parts for group in part.param_groups for p in group["params"]]


def _state_names(part: torch.optim.Optimizer, group: dict) -> set[str] | None:
    """The names of the state each parameter of `part` holds once it has been stepped (None: not known)."""
    if isinstance(part, torch.optim.AdamW):
        return {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if group.get("amsgrad") else set())
    if isinstance(part, Muon):
        return {"momentum_buffer"}
    return None


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(n) for n in t.shape) + "]"


def check_training_state(path: Path, tensors: dict[str, torch.Tensor], state: dict, model: torch.nn.Module,
                         optimizer) -> None:
    """Refuse (NslmError naming `path` and the tensor) a state.safetensors that would not resume exactly: an
    optimizer tensor that belongs to no parameter of this model, has another shape than its parameter, holds
    NaN or infinite values, or is missing after the first step; a missing or malformed CPU RNG state."""
    def damaged(detail: str) -> NslmError:
        return NslmError(f"{path} is damaged: {detail}; the run cannot be resumed")

    if not tensors:
        raise damaged("it holds no tensors (neither the optimizer state nor the random-generator state)")
    numbered = _numbered_parameters(optimizer)
    names = {id(p): name for name, p in model.named_parameters()}
    scalars = state.get("optimizer", {}).get("scalars", {})
    found: dict[int, set[str]] = {}
    rng_reference = torch.get_rng_state()
    for key, value in tensors.items():
        kind, _, rest = key.partition(".")
        if kind == "opt":
            pid_text, _, name = rest.partition(".")
            if not (pid_text.isdigit() and name):
                raise damaged(f"tensor {key} is not named opt.<parameter number>.<name>")
            pid = int(pid_text)
            if pid >= len(numbered):
                raise damaged(f"tensor {key} belongs to parameter {pid}, but this model's optimizer has "
                              f"{len(numbered)} parameters (0 to {len(numbered) - 1})")
            param = numbered[pid][0]
            what = f"parameter {pid} ({names.get(id(param), '?')})"
            if name == "step":
                if value.dim() != 0 or (not value.is_floating_point() and value.dtype not in (torch.int32, torch.int64)):
                    raise damaged(f"tensor {key} must be a single number, not of shape {_shape(value)} ({value.dtype})")
                if not (math.isfinite(float(value)) and float(value) >= 0):
                    raise damaged(f"tensor {key} must be a step count >= 0, not {float(value)}")
            else:
                if tuple(value.shape) != tuple(param.shape):
                    raise damaged(f"tensor {key} has shape {_shape(value)}, but {what} has shape {_shape(param)}")
                if not value.is_floating_point():
                    raise damaged(f"tensor {key} holds {value.dtype}, not floating-point numbers")
                if not bool(torch.isfinite(value).all()):
                    raise damaged(f"tensor {key} holds NaN or infinite values")
            found.setdefault(pid, set()).add(name)
        elif kind == "rng":
            if rest.startswith("cpu_rank"):
                if value.dtype != torch.uint8 or tuple(value.shape) != tuple(rng_reference.shape):
                    raise damaged(f"tensor {key} must be a CPU random-generator state of {rng_reference.numel()} "
                                  f"bytes (uint8), not {value.numel()} {value.dtype} values")
                try:
                    torch.Generator().set_state(value)
                except RuntimeError:
                    raise damaged(f"tensor {key} is not a valid CPU random-generator state") from None
            elif rest.startswith("cuda_rank"):
                if value.dtype != torch.uint8 or value.dim() != 1:
                    raise damaged(f"tensor {key} must be a CUDA random-generator state (bytes), "
                                  f"not of shape {_shape(value)} ({value.dtype})")
            else:
                raise damaged(f"tensor {key} is not a random-generator state of this nslm (rng.cpu_rank<N> or "
                              "rng.cuda_rank<N>)")
        else:
            raise damaged(f"tensor {key} is neither optimizer state (opt.*) nor a random-generator state (rng.*)")
    if "rng.cpu_rank0" not in tensors:
        raise damaged("the tensor rng.cpu_rank0 (the random-generator state) is missing, so the run would not "
                      "continue as it would have without the stop")
    for key in scalars:  # older torch keeps AdamW's step as a number in state.json
        pid_text, _, name = str(key).partition(".")
        if pid_text.isdigit():
            found.setdefault(int(pid_text), set()).add(name)
    if state.get("step", 0) > 0:  # after the first step every parameter has its optimizer state
        for pid, (param, part, group) in enumerate(numbered):
            expected = _state_names(part, group)
            if expected is None:
                continue
            missing = sorted(expected - found.get(pid, set()))
            if missing:
                raise damaged(f"the optimizer state of parameter {pid} ({names.get(id(param), '?')}) is missing "
                              f"(no tensor opt.{pid}.{missing[0]}) although the checkpoint is of step {state['step']}")


def load_last(run_dir: Path, model: torch.nn.Module, optimizer) -> tuple[dict, dict[str, torch.Tensor]]:
    """Restore model and optimizer from `run_dir/last/` (or the complete copy a crash left beside it);
    returns (state.json, RNG tensors)."""
    last = complete_dir(run_dir / "last")
    if last is None or not (last / "state.json").is_file():
        raise NslmError(f"{run_dir} has no last/state.json to resume from; it was never checkpointed")
    state = read_state(last / "state.json")
    load_weights(model, last / WEIGHTS_FILE)
    tensors = read_safetensors(last / "state.safetensors", "training state")
    check_training_state(last / "state.safetensors", tensors, state, model, optimizer)
    optimizer_from_files(optimizer, tensors, state.pop("optimizer"))
    rng = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
    return state, rng
