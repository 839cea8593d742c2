"""The chunked head loss (nslm.models.loss) and the sharded micro-batch (nslm.train.step): the same loss and
gradients as the plain expressions, to rounding, and repeatable bit for bit."""

import pytest
import torch
import torch.nn.functional as F

from nslm.models import ModelConfig, build_model
from nslm.models.loss import head_cross_entropy
from nslm.train.step import BatchStep


def reference(h, w, t, reduction="mean"):
    return F.cross_entropy(F.linear(h, w).float(), t, ignore_index=-100, reduction=reduction)


def grads_of(fn, h, w, t, **kw):
    h = h.detach().clone().requires_grad_(True)
    w = w.detach().clone().requires_grad_(True)
    loss = fn(h, w, t, **kw)
    (loss * 1.7).backward()  # an outer factor, as the trainer's 1 / grad_accum
    return loss.detach(), h.grad, w.grad


@pytest.mark.parametrize("rows,chunk", [(37, 8), (64, 64), (64, 256), (300, 128)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_chunked_loss_and_gradients_match_the_plain_cross_entropy(rows, chunk, reduction):
    gen = torch.Generator().manual_seed(rows)
    h = torch.randn(rows, 24, generator=gen)
    w = torch.randn(97, 24, generator=gen) * 0.3
    t = torch.randint(0, 97, (rows,), generator=gen)
    t[::5] = -100  # ignored positions (validation padding)
    want = grads_of(reference, h, w, t, reduction=reduction)
    got = grads_of(head_cross_entropy, h, w, t, reduction=reduction, chunk=chunk)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got[2], want[2], rtol=1e-4, atol=1e-6)
    assert torch.all(got[1][::5] == 0)  # an ignored position sends nothing back


def test_chunked_loss_without_gradients_and_large_logits():
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(50, 16, generator=gen) * 40  # logits in the hundreds: the max is subtracted first
    w = torch.randn(33, 16, generator=gen)
    t = torch.randint(0, 33, (50,), generator=gen)
    with torch.no_grad():
        got = head_cross_entropy(h, w, t, reduction="sum", chunk=7)
    assert torch.isfinite(got)
    torch.testing.assert_close(got, reference(h, w, t, "sum"), rtol=1e-5, atol=1e-3)
    # the gradient path as well
    loss = grads_of(head_cross_entropy, h, w, t, chunk=7)[0]
    torch.testing.assert_close(loss, reference(h, w, t), rtol=1e-5, atol=1e-4)


def test_chunked_loss_under_bf16_autocast_stays_close():
    gen = torch.Generator().manual_seed(1)
    h, w = torch.randn(40, 32, generator=gen), torch.randn(64, 32, generator=gen) * 0.2
    t = torch.randint(0, 64, (40,), generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = grads_of(reference, h, w, t)
        got = grads_of(head_cross_entropy, h, w, t, chunk=16)
    assert got[1].dtype == h.dtype and got[2].dtype == w.dtype
    torch.testing.assert_close(got[0], want[0], rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(got[2], want[2], rtol=5e-2, atol=5e-3)


@pytest.fixture(params=["transformer", "lstm"])
def tiny(request):
    if request.param == "transformer":
        cfg = ModelConfig(arch="transformer", vocab_size=61, context_length=16, d_model=32, n_layer=2, n_head=2,
                          d_ff=48, mlp="swiglu", pos_encoding="rope", norm="rmsnorm")
    else:  # a recurrent model with a projection back to the embedding width, as lstm-1m has
        cfg = ModelConfig(arch="lstm", vocab_size=61, context_length=16, d_model=32, n_layer=2, rnn_hidden=40)
    torch.manual_seed(0)
    model = build_model(cfg)
    gen = torch.Generator().manual_seed(3)
    data = torch.randint(0, 61, (7, 17), generator=gen)
    return model, data[:, :-1], data[:, 1:]


def step_grads(model, x, y, shards, scale=1.0):
    model.zero_grad(set_to_none=True)
    step = BatchStep(model, shards)
    try:
        loss = step(x, y, scale)
    finally:
        step.close()
    return loss, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("shards", [2, 3, 7, 12])
def test_sharded_batch_gives_the_whole_batch_loss_and_gradients(tiny, shards):
    model, x, y = tiny
    # the plain expression: logits, then cross-entropy, then backward
    model.zero_grad(set_to_none=True)
    _, loss = model(x, y)
    (loss * 0.5).backward()
    want = [p.grad.clone() for p in model.parameters()]
    got_loss, got = step_grads(model, x, y, shards, scale=0.5)  # 7 windows: uneven shards weigh by their size
    torch.testing.assert_close(got_loss, loss.detach(), rtol=1e-5, atol=1e-6)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_sharded_batch_repeats_bit_for_bit_and_adds_to_existing_gradients(tiny):
    model, x, y = tiny
    first = step_grads(model, x, y, 2)
    again = step_grads(model, x, y, 2)
    assert torch.equal(first[0], again[0])
    assert all(torch.equal(a, b) for a, b in zip(first[1], again[1]))
    # a second micro-batch adds to .grad, as backward() does
    step = BatchStep(model, 2)
    try:
        step(x, y)
    finally:
        step.close()
    assert all(torch.allclose(p.grad, 2 * g, rtol=1e-5, atol=1e-7) for p, g in zip(model.parameters(), first[1]))
