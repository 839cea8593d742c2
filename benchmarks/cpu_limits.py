"""How far the CPU lets a training step go: the matrix products of transformer-1m's step through PyTorch's BLAS
beside NumPy's, the square one on a single thread (how much the second core adds), and nslm's training step
(the preset's optimizer, 8 windows a step) in one process of all threads beside one single-thread process per
core run side by side (data parallelism's best case: no gradient exchange). Figures, not a test; run it on an idle machine.

    python benchmarks/cpu_limits.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import torch

# (rows, inner, columns) of the step's products at 8 windows of 256 tokens: head, qkv, down projection's
# gradient, MLP; and a square one as the yardstick
SHAPES = [(2048, 128, 4096), (2048, 128, 384), (2048, 4096, 128), (2048, 128, 172), (1024, 1024, 1024)]


def best_seconds(fn, repeats: int, calls: int = 30) -> float:
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def step_rate(threads: int, batch: int, steps: int = 20) -> float:
    """Tokens/s of nslm's training step for transformer-1m, as `nslm train` builds it, on `threads` threads."""
    from nslm.models import build_model, load_preset, preset_train_defaults
    from nslm.train.config import TrainConfig
    from nslm.train.optim import make_optimizer

    torch.set_num_threads(threads)
    cfg = load_preset("transformer-1m")
    tcfg = TrainConfig.from_dict(preset_train_defaults("transformer-1m"))
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = make_optimizer(model, tcfg, torch.device("cpu"))
    data = torch.randint(0, cfg.vocab_size, (steps + 3, batch, cfg.context_length + 1))

    def step(d):
        model(d[:, :-1], d[:, 1:])[1].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for d in data[:3]:
        step(d)
    t0 = time.perf_counter()
    for d in data[3:]:
        step(d)
    return steps * batch * cfg.context_length / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker", type=int, nargs=2, metavar=("THREADS", "BATCH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(step_rate(*args.worker))
        return
    cores = torch.get_num_threads()
    print(f"{cores} threads; GFLOP/s, best of {args.repeats}")
    print("| product | PyTorch (its BLAS) | NumPy (its BLAS) |\n| --- | ---: | ---: |")
    for m, k, n in SHAPES:
        a, b = torch.randn(m, k), torch.randn(k, n)
        an, bn = a.numpy(), b.numpy()
        flops = 2 * m * k * n
        ours, theirs = (flops / best_seconds(f, args.repeats) / 1e9 for f in (lambda: a @ b, lambda: an @ bn))
        print(f"| {m} x {k} by {k} x {n} | {ours:.1f} | {theirs:.1f} |")
    square = torch.randn(1024, 1024), torch.randn(1024, 1024)
    torch.set_num_threads(1)
    single = 2 * 1024**3 / best_seconds(lambda: square[0] @ square[1], args.repeats) / 1e9
    torch.set_num_threads(cores)
    print(f"1024 x 1024 by 1024 x 1024 on one thread (PyTorch): {single:.1f} GFLOP/s")
    one = step_rate(cores, 8)
    worker = [sys.executable, __file__, "--worker", "1", "8"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(worker, stdout=subprocess.PIPE, text=True, env=env) for _ in range(cores)]
    side_by_side = [float(p.communicate()[0]) for p in procs]
    print(f"training step, 8 windows: one process of {cores} threads {one:,.0f} tokens/s; {cores} processes of "
          f"one thread side by side {' + '.join(f'{r:,.0f}' for r in side_by_side)} = {sum(side_by_side):,.0f} "
          f"tokens/s ({sum(side_by_side) / one:.2f}x, before any gradient exchange)")


if __name__ == "__main__":
    main()
