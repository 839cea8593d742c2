"""train.optimizer: AdamW, or Muon on the hidden matrices beside AdamW, and their saved state."""

from __future__ import annotations

import copy

import pytest
import torch

from nslm.models import build_model, load_preset
from nslm.train.config import TrainConfig
from nslm.train.optim import Combined, Muon, hidden_matrices, make_optimizer, orthogonalise, set_lr

CPU = torch.device("cpu")


def small(preset: str = "transformer-1m") -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = load_preset(preset)
    return build_model(type(cfg).from_dict({**cfg.to_dict(), "vocab_size": 64, "d_model": 32, "n_layer": 2,
                                            "context_length": 16}))


def loss_of(model: torch.nn.Module, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 64, (2, 17), generator=gen)
    return model(x[:, :-1], x[:, 1:])[1]


def test_muon_is_torchs_muon_step_for_step():
    """With the iterations in bfloat16, as torch.optim.Muon runs them, the parameters are torch's exactly."""
    torch.manual_seed(0)
    ours_w = torch.randn(40, 24, requires_grad=True)
    torch_w = ours_w.detach().clone().requires_grad_()
    ours = Muon([ours_w], lr=0.02, weight_decay=0.1, momentum=0.95, ns_dtype=torch.bfloat16)
    theirs = torch.optim.Muon([torch_w], lr=0.02, weight_decay=0.1, momentum=0.95, adjust_lr_fn="match_rms_adamw")
    for _ in range(4):
        grad = torch.randn(40, 24)
        ours_w.grad, torch_w.grad = grad.clone(), grad.clone()
        ours.step()
        theirs.step()
    assert torch.equal(ours_w, torch_w)


@pytest.mark.parametrize("shape", [(48, 16), (16, 48), (32, 32)])
def test_orthogonalise_pushes_singular_values_towards_one(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * 7.0  # any scale: it is normalised first
    s = torch.linalg.svdvals(orthogonalise(g, torch.float32))
    assert s.min() > 0.5 and s.max() < 1.3, s
    # the same directions as the exact polar factor U V^T
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    cos = torch.nn.functional.cosine_similarity(orthogonalise(g, torch.float32).flatten(), (u @ vh).flatten(), dim=0)
    assert cos > 0.9


@pytest.mark.parametrize("preset", ["transformer-1m", "lstm-1m"])
def test_muon_takes_hidden_matrices_and_adamw_the_rest(preset):
    model = small(preset)
    opt = make_optimizer(model, TrainConfig(optimizer="muon"), CPU)
    muon, adamw = opt.parts
    in_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    in_adamw = {id(p) for g in adamw.param_groups for p in g["params"]}
    assert in_muon == {id(p) for p in hidden_matrices(model)} and not in_muon & in_adamw
    assert in_muon | in_adamw == {id(p) for p in model.parameters()}
    assert id(model.tok_emb.weight) in in_adamw  # the embedding, tied to the output head
    assert all(p.dim() == 2 for p in hidden_matrices(model))
    assert isinstance(make_optimizer(model, TrainConfig(), CPU), torch.optim.AdamW)


def test_muon_lowers_the_loss_and_a_schedule_reaches_every_group():
    model = small()
    opt = make_optimizer(model, TrainConfig(optimizer="muon", lr=3e-3), CPU)
    set_lr(opt, 3e-3)
    first = loss_of(model, 0).item()
    for _ in range(20):
        loss_of(model, 0).backward()
        opt.step()
        opt.zero_grad()
    assert loss_of(model, 0).item() < first - 0.5
    assert {g["lr"] for g in opt.param_groups} == {3e-3} and len(opt.param_groups) == 3


def test_combined_state_round_trips_and_continues_identically():
    model = small()
    opt = make_optimizer(model, TrainConfig(optimizer="muon"), CPU)
    for seed in range(3):
        loss_of(model, seed).backward()
        opt.step()
        opt.zero_grad()
    saved = opt.state_dict()
    assert sorted(saved["state"]) == list(range(len(list(model.parameters()))))
    twin = small()
    twin.load_state_dict(model.state_dict())
    twin_opt = make_optimizer(twin, TrainConfig(optimizer="muon"), CPU)
    twin_opt.load_state_dict(copy.deepcopy(saved))  # a state dict holds the live buffers; a file holds copies
    for m, o in ((model, opt), (twin, twin_opt)):
        loss_of(m, 9).backward()
        o.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_combined_refuses_an_adamw_state():
    model = small()
    adamw_state = make_optimizer(model, TrainConfig(), CPU).state_dict()
    with pytest.raises(ValueError, match="not of this combination"):
        make_optimizer(model, TrainConfig(optimizer="muon"), CPU).load_state_dict(adamw_state)
    assert isinstance(make_optimizer(model, TrainConfig(optimizer="muon"), CPU), Combined)


def test_adamw_beside_muon_keeps_its_multiple_of_the_learning_rate_through_the_schedule_and_a_reload():
    """train.adamw_lr_ratio: the embedding, norms and biases at a multiple of the rate; the schedule scales both."""
    model = small()
    cfg = TrainConfig(optimizer="muon", lr=1e-2, adamw_lr_ratio=3)
    opt = make_optimizer(model, cfg, CPU)
    set_lr(opt, 5e-3)  # the schedule halfway down
    muon, adamw = opt.parts
    assert {g["lr"] for g in muon.param_groups} == {5e-3}
    assert {round(g["lr"], 12) for g in adamw.param_groups} == {1.5e-2}
    loss_of(model, 0).backward()
    opt.step()
    # a state saved with another scale (or none) does not carry it into a run that sets its own
    other = make_optimizer(model, TrainConfig(optimizer="muon", lr=1e-2), CPU)
    other.load_state_dict(copy.deepcopy(opt.state_dict()))
    set_lr(other, 1e-2)
    assert {g["lr"] for g in other.param_groups} == {1e-2}
    opt.load_state_dict(copy.deepcopy(other.state_dict()))
    set_lr(opt, 1e-2)
    assert {round(g["lr"], 12) for g in opt.parts[1].param_groups} == {3e-2}
    plain = make_optimizer(model, TrainConfig(lr=1e-3, adamw_lr_ratio=3), CPU)  # AdamW alone: one rate for all
    set_lr(plain, 4e-4)
    assert {g["lr"] for g in plain.param_groups} == {4e-4}
