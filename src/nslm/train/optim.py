"""The optimizers `nslm train` builds: AdamW, or Muon on the hidden matrices with AdamW on the rest.

Muon (Jordan et al. 2024) orthogonalises each hidden matrix's momentum by a few Newton-Schulz iterations
before the update, scaled as Moonshot's "match_rms_adamw" does (Liu et al. 2025, "Muon is Scalable for LLM
Training") so that its updates have about AdamW's size: both halves follow the same schedule, AdamW at
train.adamw_lr_ratio times Muon's learning rate (1 by default, 3 in the transformer-1m preset).
Embeddings (tied to the output head), norms and biases stay with AdamW: Muon is for matrices that map one
hidden vector to another. The update is torch.optim.Muon's, step for step (a test holds it to it), but
torch's runs the iterations in bfloat16, which a CPU without native bf16 matrix products (AVX2) computes
about 12x slower than float32: a step of the 1M Transformer took 0.68 s on one thread against 58 ms (AdamW's
whole step: 9 ms). Here they run in bfloat16 only on a GPU.
"""

from __future__ import annotations

import torch
from torch import nn

OPTIMIZERS = ("adamw", "muon")


def _adamw(groups: list[dict], cfg, device: torch.device) -> torch.optim.AdamW:
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=device.type == "cuda")


def hidden_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The 2-D trainable weights that are not embedding tables (nor tied to one)."""
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return [p for p in model.parameters() if p.requires_grad and p.dim() == 2 and id(p) not in embedding_ids]


def make_optimizer(model: nn.Module, cfg, device: torch.device):
    """AdamW with weight decay on matrices (embeddings, linear and recurrent weights), not on norms and biases;
    or, with train.optimizer "muon", Muon on the hidden matrices and that AdamW on everything else."""
    params = [p for p in model.parameters() if p.requires_grad]
    muon_params = hidden_matrices(model) if cfg.optimizer == "muon" else []
    muon_ids = {id(p) for p in muon_params}
    rest = [p for p in params if id(p) not in muon_ids]
    decay = [p for p in rest if p.dim() >= 2]
    no_decay = [p for p in rest if p.dim() < 2]
    adamw = _adamw([{"params": decay, "weight_decay": cfg.weight_decay},
                    {"params": no_decay, "weight_decay": 0.0}], cfg, device)
    if not muon_params:
        return adamw
    muon = Muon(muon_params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.muon_momentum,
                ns_dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    return Combined([muon, adamw], lr_scales=[1.0, cfg.adamw_lr_ratio])


def set_lr(optimizer, lr: float) -> None:
    """Set the learning rate of every group for this step of the schedule: `lr`, times its part's scale where
    the optimizer is a Combined (AdamW beside Muon at train.adamw_lr_ratio times the rate)."""
    pairs = zip(optimizer.parts, optimizer.lr_scales) if isinstance(optimizer, Combined) else [(optimizer, 1.0)]
    for part, scale in pairs:
        for group in part.param_groups:
            group["lr"] = lr * scale


# the quintic Newton-Schulz iteration of Jordan's Muon (and torch.optim.Muon's defaults)
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5


def orthogonalise(g: torch.Tensor, dtype: torch.dtype, eps: float = 1e-7) -> torch.Tensor:
    """About U V^T of each matrix g = U S V^T in g [..., rows, columns] (singular values pushed into roughly
    [0.7, 1.2]) by NS_STEPS iterations in `dtype`."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(dtype).reshape(-1, *g.shape[-2:])  # one batch of matrices, however many were given
    tall = g.size(-2) > g.size(-1)
    if tall:
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)  # spectral norm at most 1
    for _ in range(NS_STEPS):
        gram = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return (x.mT if tall else x).reshape(g.shape).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Muon with Nesterov momentum and decoupled weight decay, its step scaled by 0.2 sqrt(max(rows, columns))."""

    def __init__(self, params, lr: float, weight_decay: float, momentum: float, ns_dtype: torch.dtype):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum})
        self.ns_dtype = ns_dtype
        if any(p.dim() != 2 for group in self.param_groups for p in group["params"]):
            raise ValueError("Muon takes matrices only")

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            by_shape: dict[tuple, list] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - momentum)
                by_shape.setdefault(tuple(p.shape), []).append((p, p.grad.lerp(buf, momentum)))
            # matrices of one shape are orthogonalised together: one batched product instead of several
            # small ones, which at these sizes leave most of the CPU idle
            for shape, items in by_shape.items():
                updates = orthogonalise(torch.stack([u for _, u in items]), self.ns_dtype)
                for (p, _), update in zip(items, updates):
                    p.mul_(1 - lr * group["weight_decay"])
                    p.add_(update, alpha=-lr * 0.2 * max(shape) ** 0.5)


class Combined:
    """Several optimizers over disjoint parameters, seen as one: their param_groups side by side, one step, and
    one state dict in torch's layout, parameter numbers running on from one optimizer to the next and each group
    tagged with the optimizer it belongs to. `lr_scales`: each part's learning rate as a multiple of the
    schedule's (`set_lr`); they come from the settings, so a loaded state dict does not change them."""

    def __init__(self, parts: list[torch.optim.Optimizer], lr_scales: list[float] | None = None):
        self.parts = parts
        self.lr_scales = list(lr_scales) if lr_scales is not None else [1.0] * len(parts)
        if len(self.lr_scales) != len(parts):
            raise ValueError("one learning-rate scale per optimizer")

    @property
    def param_groups(self) -> list[dict]:
        return [group for part in self.parts for group in part.param_groups]

    def step(self) -> None:
        for part in self.parts:
            part.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        state, groups, offset = {}, [], 0
        for index, part in enumerate(self.parts):
            sd = part.state_dict()
            count = sum(len(g["params"]) for g in sd["param_groups"])
            state.update({offset + pid: value for pid, value in sd["state"].items()})
            groups += [dict(g, params=[offset + pid for pid in g["params"]], part=index) for g in sd["param_groups"]]
            offset += count
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd: dict) -> None:
        groups = sd["param_groups"]
        if {g.get("part") for g in groups} != set(range(len(self.parts))):
            raise ValueError("the saved state is not of this combination of optimizers (Muon with AdamW)")
        offset = 0
        for index, part in enumerate(self.parts):
            mine = [dict(g) for g in groups if g.get("part") == index]
            for g in mine:
                del g["part"]
            ids = [pid for g in mine for pid in g["params"]]
            if ids != list(range(offset, offset + len(ids))):
                raise ValueError("the saved parameter numbering does not fit this combination of optimizers")
            for g in mine:
                g["params"] = [pid - offset for pid in g["params"]]
            state = {pid - offset: value for pid, value in sd["state"].items() if offset <= pid < offset + len(ids)}
            part.load_state_dict({"state": state, "param_groups": mine})
            offset += len(ids)
