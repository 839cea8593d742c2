"""`nslm bench train|generate|novelty`: figures, not tests. Training and generation use random tokens, so they
need no data folder; `novelty` embeds a data folder's training stories (nslm.bench.novelty)."""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

from nslm.atomic import atomic_write_json
from nslm.cli import HelpFormatter, int_up_to, positive_int
from nslm.errors import NslmError

EXAMPLE = """examples:
  nslm bench train --preset transformer-1m
  nslm bench train --preset lstm-1m --steps 30 --batch-size 32
  nslm bench generate --preset transformer-1m --tokens 200
  nslm bench generate --model runs/tf1m
  nslm bench generate --model tinystories-transformer-1m --tokens 256 --json
  nslm bench generate --model tinystories-transformer-1m --prompt-set --json
  nslm bench novelty --data data/tinystories --neighbours
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="measure training, generation and novelty-index speed",
                              description="Print training tokens/s and model FLOP/s (fp32 and bf16, nslm beside "
                              "a plain-PyTorch loop), generation tokens/s with and without the cache, or how fast the novelty "
                              "index embeds training stories.",
                              epilog=EXAMPLE, formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="bench_command", metavar="WHAT", required=True)
    t = sub.add_parser("train", help="training throughput", formatter_class=HelpFormatter)
    t.add_argument("--preset", default="transformer-1m")
    t.add_argument("--steps", type=int, default=20, help="timed steps per row")
    t.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--context", type=positive_int, default=None, help="window length (default: the preset's)")
    t.add_argument("--device", default="auto")
    t.add_argument("--dtype", choices=("all", "fp32", "bf16"), default="all", help="which precision rows to time")
    t.add_argument("--optimizer", default=None,
                   help="nslm's optimizer, adamw or muon (default: the preset's, as nslm train uses it)")
    t.add_argument("--batch-threads", type=int_up_to(256), default=None, metavar="N",
                   help="threads that each run a share of nslm's windows (default: as nslm train picks them\n"
                        "here, one per PyTorch thread on a CPU; 1: one pass on all threads, as before)")
    t.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                   help="torch.compile both models first (MODE: default, reduce-overhead, max-autotune)")
    _json_arg(t)
    t.set_defaults(func=bench_train)
    g = sub.add_parser("generate", help="generation speed with and without the cache", formatter_class=HelpFormatter)
    g.add_argument("--preset", default="transformer-1m", help="a freshly initialised preset (ignored with --model)")
    g.add_argument("--model", default=None, help="a trained run folder or shipped model instead")
    g.add_argument("--tokens", type=int_up_to(100_000), default=256, help="new tokens per measurement")
    g.add_argument("--device", default="cpu")
    g.add_argument("--prompt-set", action="store_true",
                   help="with --model: also time the evaluation prompts as `nslm eval generate` tells them (300\n"
                        "tokens, temperature 0.8, seeds 1234 + i), as one batch and one by one, with each step")
    _json_arg(g)
    g.set_defaults(func=bench_generate)
    n = sub.add_parser("novelty", help="novelty-index embedding speed, and the neighbours of cheaper paths",
                       formatter_class=HelpFormatter,
                       description="Embed training stories as the novelty index does, beside the plain way "
                       "(64 per call in file order), and print stories/s and GFLOP/s; with --neighbours, also "
                       "how often cheaper embeddings find the same nearest training story.")
    n.add_argument("--data", default="data/tinystories", help="a prepared data folder (its train.txt)")
    # bounded: each path embeds --stories --repeats times at about 10-25 stories/s on a 2-core CPU
    n.add_argument("--stories", type=int_up_to(20_000), default=512, help="training stories embedded for the speed rows")
    n.add_argument("--repeats", type=int_up_to(10), default=2,
                   help="timings of each path, alternating (the best is shown)")
    n.add_argument("--neighbours", action="store_true",
                   help="also compare nearest training stories: full length against shorter inputs, float16\n"
                        "and word TF-IDF, over an index of --index-stories and --queries generated stories")
    n.add_argument("--index-stories", type=int_up_to(50_000), default=2000,
                   help="training stories in the compared indexes")
    n.add_argument("--queries", type=int_up_to(10_000), default=200, help="stories told by --model (seeds 0, 1, ...)")
    n.add_argument("--model", default="tinystories-transformer-1m", help="the model that tells the queries")
    n.add_argument("--max-tokens", type=int_up_to(100_000), default=300,
                   help="new tokens per query story (temperature 0.8)")
    _json_arg(n)
    n.set_defaults(func=bench_novelty)


def bench_novelty(args: argparse.Namespace) -> int:
    from nslm.bench.novelty import run  # numpy and the embedder: imported when the benchmark runs

    return run(args)


def _json_arg(p) -> None:
    p.add_argument("--json", metavar="FILE", nargs="?", const="-",
                   help="also write the figures as JSON to FILE; alone, print them as the last line of stdout")


def _emit_json(target: str | None, figures: dict) -> None:
    if target == "-":
        print(json.dumps(figures))
    elif target:
        atomic_write_json(target, figures)


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=120).print(table)


# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets, for MFU; matched on the device name.
PEAK_BF16 = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "H800": 989e12, "A100": 312e12, "L4": 121e12,
             "A10G": 125e12, "4090": 165e12}


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def peak_flops(device_name: str) -> float | None:
    """The bf16 peak of a known GPU by its name, or None (CPUs and unknown cards get no MFU)."""
    return next((peak for key, peak in PEAK_BF16.items() if key in device_name), None)


def _sync(device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def time_training(model, optimizer_step, batches, device, autocast_dtype, warmup: int, batch_step=None) -> float:
    """Seconds per step over `batches` after `warmup` untimed steps; `optimizer_step()` updates the weights.
    `batch_step(x, y)` runs the forward and backward pass where given (nslm's: `nslm.train.step.BatchStep`),
    else the plain `model(x, y)` then `loss.backward()`."""
    from nslm.device import autocast  # torch: imported when a benchmark runs, not for `nslm --help`

    def step(x, y):
        if batch_step is not None:
            batch_step(x, y)
        else:
            with autocast(device, autocast_dtype):
                out = model(x, y)
            loss = out[1] if isinstance(out, tuple) else out
            loss.backward()
        optimizer_step()

    for x, y in batches[:warmup]:
        step(x, y)
    _sync(device)
    t0 = time.perf_counter()
    for x, y in batches[warmup:]:
        step(x, y)
    _sync(device)
    return (time.perf_counter() - t0) / max(1, len(batches) - warmup)


def bench_train(args: argparse.Namespace) -> int:
    # torch and the models: imported when a benchmark runs, not for `nslm --help`
    import torch

    from nslm.bench.reference import stock_model
    from nslm.device import autocast, bf16_native, pick_autocast_dtype, pick_device
    from nslm.models import build_model, load_preset, preset_train_defaults
    from nslm.train.config import TrainConfig
    from nslm.train.optim import make_optimizer
    from nslm.train.step import BatchStep

    if args.compile is not None and args.compile not in COMPILE_MODES:
        raise NslmError("--compile takes default, reduce-overhead or max-autotune(-no-cudagraphs), "
                        f"not {args.compile!r}")
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        raise NslmError("--steps and --batch-size must be positive and --warmup not negative")
    cfg = load_preset(args.preset)
    # nslm's rows update the weights as `nslm train` would with this preset: its optimizer (Muon costs more
    # per step than AdamW) and gradient clipping; the plain loop uses torch's AdamW
    tcfg = TrainConfig.from_dict({**preset_train_defaults(args.preset),
                                  **({"optimizer": args.optimizer} if args.optimizer else {}),
                                  "batch_size": args.batch_size, "compile": bool(args.compile),
                                  "batch_threads": args.batch_threads})
    if args.context:
        cfg.context_length = args.context
        cfg.validate()
    device = pick_device(args.device)
    T, B = cfg.context_length, args.batch_size
    shards = tcfg.for_device(device, cfg.dropout).batch_threads
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, cfg.vocab_size, (args.warmup + args.steps, B, T + 1), generator=gen)
    batches = [(d[:, :-1].to(device), d[:, 1:].to(device)) for d in data]
    native = bf16_native(device)
    # emulated bf16 runs a 1M model at a few GFLOP/s (seconds per step): nobody trains that way, so those
    # rows would only make the benchmark take minutes
    skip_bf16 = device.type == "mps" or (device.type == "cpu" and not native)
    if args.dtype == "bf16" and skip_bf16:
        raise NslmError(f"bf16 is not native on {device}: its rows would only be emulated; use --dtype fp32")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    where = device_name if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"{args.preset} on {device} ({where}), batch {B} x context {T}, nslm's optimizer {tcfg.optimizer}"
          f"{', torch.compile ' + args.compile if args.compile else ''}, "
          f"nslm's windows in {shards} thread{'s' if shards > 1 else ''} a step; "
          f"bf16 {'native' if native else 'not native (emulated, rows skipped)'} on this hardware")
    peak = peak_flops(device_name)
    rows = []
    rates: dict[tuple[str, str], float] = {}
    flops_per_token = build_model(cfg).flops_per_token()
    for label in ("nslm", "plain PyTorch"):
        for dtype_name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            if (skip_bf16 and dtype is not None) or args.dtype not in ("all", dtype_name):
                continue
            torch.manual_seed(0)
            batch_step = None
            if label == "nslm":
                model = build_model(cfg).to(device)
                opt = make_optimizer(model, tcfg, device)

                def update(model=model, opt=opt):
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    opt.step()
                    opt.zero_grad(set_to_none=True)
            else:
                model = stock_model(cfg).to(device)
                opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

                def update(opt=opt):
                    opt.step()
                    opt.zero_grad(set_to_none=True)
            if args.compile:
                model = torch.compile(model, mode=None if args.compile == "default" else args.compile)
            if label == "nslm":  # as `nslm train` runs a micro-batch here: its windows shared out over threads
                batch_step = BatchStep(model, shards, lambda dtype=dtype: autocast(device, dtype))
            try:
                seconds = time_training(model, update, batches, device, dtype, args.warmup, batch_step)
            finally:
                if batch_step is not None:
                    batch_step.close()
            tok_s = B * T / seconds
            rates[label, dtype_name] = tok_s
            flops = tok_s * flops_per_token
            rows.append([label, dtype_name, f"{tok_s:,.0f}", f"{flops / 1e9:,.2f}",
                         f"{100 * flops / peak:.2f}%" if peak else "-", f"{seconds * 1000:,.2f}"])
    _table(f"training throughput ({flops_per_token / 1e6:.1f} MFLOP per token; MFU: share of the GPU's dense "
           f"half-precision peak)",
           ["implementation", "dtype", "tokens/s", "model GFLOP/s", "MFU", "ms/step"], rows)
    if args.json:
        # nslm's default path is the precision `nslm train --dtype auto` picks here; the yardstick runs fp32
        # (or, where only one precision was timed, the same precision)
        default = "bf16" if pick_autocast_dtype("auto", device) is not None else "fp32"
        if args.dtype != "all":
            default = args.dtype
        ref_dtype = "fp32" if ("plain PyTorch", "fp32") in rates else default
        # the speedup from the printed (rounded) rates, so the object agrees with itself
        tok_s, reference = round(rates["nslm", default], 1), round(rates["plain PyTorch", ref_dtype], 1)
        _emit_json(args.json, {"preset": args.preset, "device": str(device), "threads": torch.get_num_threads(),
                          "device_name": device_name,
                          "batch_size": B, "context": T, "dtype": default, "reference_dtype": ref_dtype,
                          "optimizer": tcfg.optimizer,
                          "compile": args.compile, "batch_threads": shards, "tokens_per_s": tok_s,
                          "reference_tokens_per_s": reference, "speedup": round(tok_s / reference, 3),
                          "mfu": round(rates["nslm", default] * flops_per_token / peak, 4) if peak else None,
                          "tokens_per_s_by_row": {f"{label} {d}": round(v, 1) for (label, d), v in rates.items()}})
    return 0


def bench_generate(args: argparse.Namespace) -> int:
    # torch and the models: imported when a benchmark runs, not for `nslm --help`
    import torch

    from nslm.device import pick_device
    from nslm.generate.api import load
    from nslm.models import build_model, load_preset
    from nslm.sampling import generate_ids

    if args.tokens < 1:
        raise NslmError("--tokens must be positive")
    if args.prompt_set and not args.model:
        raise NslmError("--prompt-set needs --model (a trained model with its tokenizer)")
    if args.model:
        story_model = load(args.model, device=args.device)
        model = story_model.model
        name = args.model
    else:
        torch.manual_seed(0)
        model = build_model(load_preset(args.preset)).to(pick_device(args.device)).eval()
        name = f"{args.preset} (untrained)"
    # a prompt of 32 ids (about an evaluation prompt's length); 256 new tokens slide a 256 window once
    prompt = list(range(1, 33))
    rows = []
    rates = {}
    # nslm's default (the C step, else the NumPy step, where the model allows it), the other cached steps
    # beside it, and full passes
    engine = _default_step(model)
    modes = [("default", f"with cache ({STEP_LABELS[engine]}, the default)", True, "auto")]
    for other in ("numpy", "torch"):
        if other != engine and (other == "torch" or engine == "c"):
            modes.append((other, f"with cache ({STEP_LABELS[other]})", True, other))
    modes.append(("uncached", "without cache", False, "torch"))
    for mode, label, use_cache, how in modes:
        list(generate_ids(model, prompt, 4, temperature=0, use_cache=use_cache, engine=how))  # warm-up
        t0 = time.perf_counter()
        n = len(list(generate_ids(model, prompt, args.tokens, stop_id=None, temperature=0, use_cache=use_cache,
                                  engine=how)))
        seconds = time.perf_counter() - t0
        rates[mode] = n / seconds
        rows.append([label, str(n), f"{seconds:.2f}", f"{n / seconds:,.1f}"])
    # two stories at once, each in its own thread, as the GUI's Compare and several visitors tell them
    # (the same count of tokens one after the other is the default row above)
    rates["two threads"] = _two_threads_rate(model, prompt, args.tokens)
    rows.append(["with cache, two stories in two threads", str(2 * args.tokens), "",
                 f"{rates['two threads']:,.1f}"])
    first = []
    for _ in range(5):
        t0 = time.perf_counter()
        next(generate_ids(model, prompt, 1, temperature=0))
        first.append(time.perf_counter() - t0)
    first_ms = statistics.median(first) * 1000
    _table(f"generation speed: {name}, greedy, batch 1, prompt {len(prompt)} tokens",
           ["mode", "tokens", "seconds", "tokens/s"], rows)
    print(f"first token (prompt read and one token picked, with the cache): {first_ms:.1f} ms")
    figures = {"model": name, "device": str(next(model.parameters()).device), "tokens": args.tokens,
               "prompt_tokens": len(prompt), "engine": engine, "cached_tokens_per_s": round(rates["default"], 1),
               "numpy_cached_tokens_per_s": round(rates.get("numpy", rates["default"]), 1) if engine != "torch" else None,
               "torch_cached_tokens_per_s": round(rates.get("torch", rates["default"]), 1),
               "uncached_tokens_per_s": round(rates["uncached"], 1),
               "two_threads_tokens_per_s": round(rates["two threads"], 1),
               "cache_speedup": round(rates["default"] / rates["uncached"], 2), "first_token_ms": round(first_ms, 2)}
    if args.prompt_set:
        figures["prompt_set"] = _bench_prompt_set(story_model, engine)
    _emit_json(args.json, figures)
    return 0


STEP_LABELS = {"c": "C step", "numpy": "NumPy step", "torch": "PyTorch step"}


def _two_threads_rate(model, prompt: list[int], tokens: int) -> float:
    """Tokens/s of two greedy stories told at once in two threads with nslm's default step (a step that lets
    go of Python's lock while it computes, as the C step does, runs them on two cores)."""
    from nslm.sampling import generate_ids

    counts = [0, 0]

    def tell(i):
        counts[i] = len(list(generate_ids(model, prompt, tokens, stop_id=None, temperature=0)))

    threads = [threading.Thread(target=tell, args=(i,)) for i in range(2)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def _default_step(model) -> str:
    """Which cached step generation takes for this model by default: "c", "numpy" or "torch"."""
    from nslm.sampling import numpy_decoder

    decoder = numpy_decoder(model)
    return "torch" if decoder is None else "c" if getattr(decoder, "c_step", None) is not None else "numpy"


def _bench_prompt_set(story_model, engine: str) -> dict:
    """The evaluation prompts told as `nslm eval generate` tells them, as one batch and one by one, with each
    cached step the model has (nslm's default first): tokens/s of each, and whether all agree."""
    from nslm.eval.genset import load_prompts, prompt_set
    from nslm.sampling import generate_batch_ids, generate_ids

    prompts = [story_model.encode_prompt(p)[0] for p in load_prompts()]
    seeds = [1234 + i for i in range(len(prompts))]
    eot, model = story_model.tokenizer.eot_id, story_model.model
    steps = {"c": ("c", "numpy", "torch"), "numpy": ("numpy", "torch"), "torch": ("torch",)}[engine]
    paths = {}
    for how in steps:
        paths[f"batch, {STEP_LABELS[how]}"] = lambda how=how: generate_batch_ids(model, prompts, 300, eot, 0.8,
                                                                                 seeds=seeds, engine=how)
        paths[f"one by one, {STEP_LABELS[how]}"] = lambda how=how: [
            list(generate_ids(model, p, 300, eot, 0.8, seed=s, engine=how)) for p, s in zip(prompts, seeds)]
    rows, rates, stories = [], {}, []
    for label, run in paths.items():
        t0 = time.perf_counter()
        ids = run()
        seconds = time.perf_counter() - t0
        n = sum(map(len, ids))
        rates[label] = n / seconds
        stories.append(ids)
        rows.append([label, str(n), f"{seconds:.2f}", f"{n / seconds:,.1f}"])
    # a story whose paths part: each path computes the logits in its own order, so a sampled draw whose two
    # best candidates are within float rounding of each other can go either way, and the story with it
    differing = sum(any(s[i] != stories[0][i] for s in stories) for i in range(len(prompts)))
    same = differing == 0
    _table(f"{len(prompts)} prompts ({prompt_set()}), 300 tokens at temperature 0.8, seeds 1234 + i",
           ["path", "tokens", "seconds", "tokens/s"], rows)
    print(f"the same {len(prompts)} stories by every path: {'yes' if same else f'NO ({differing} differ)'}")
    default = STEP_LABELS[engine]
    return {"prompts": len(prompts), "tokens": sum(map(len, stories[0])), "same_stories": same,
            "stories_differing": differing, "engine": engine,
            "tokens_per_s": {label: round(v, 1) for label, v in rates.items()},
            # the default step's batch against its own one by one, and against PyTorch's one by one
            "batch_speedup": round(rates[f"batch, {default}"] / rates[f"one by one, {default}"], 2),
            "batch_speedup_over_torch": round(rates[f"batch, {default}"] / rates["one by one, PyTorch step"], 2)}
