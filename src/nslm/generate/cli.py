"""`nslm generate`: tell a story from a prompt with a trained run or a shipped model, streaming it."""

from __future__ import annotations

import argparse
import sys

from nslm.cli import HelpFormatter, int_up_to
from nslm.errors import NslmError

EXAMPLE = """examples:
  nslm generate --model runs/tf1m "Once upon a time"
  nslm generate --model runs/tf1m "Lily found a red ball" --temperature 0.7 --top-p 0.9 --num-samples 3
  nslm generate --model runs/tf1m "Once upon a time" --temperature 0    # greedy
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="tell a story from a prompt with a trained model",
                              description="Continue a prompt until the model ends the story itself (the "
                              "end-of-story token) or --max-tokens is reached. Text streams as it comes.",
                              epilog=EXAMPLE, formatter_class=HelpFormatter)
    p.add_argument("prompt", nargs="?", default=None, help="the beginning of the story")
    p.add_argument("--model", required=True, help="run folder (runs/NAME) or the name of a shipped model")
    p.add_argument("--max-tokens", type=int, default=300, help="stop after this many new tokens")
    p.add_argument("--temperature", type=float, default=0.8, help="0 means greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="make sampling repeatable")
    p.add_argument("--num-samples", type=int_up_to(10_000), default=1)
    p.add_argument("--no-cache", action="store_true", help="recompute every step without the KV cache / carried state")
    p.add_argument("--unconditional", action="store_true", help="start from the end-of-story token instead of a prompt")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda or mps")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nslm.generate.api import load  # torch: imported when the command runs, not for `nslm --help`
    from nslm.sampling import check_seed

    if args.num_samples < 1:
        raise NslmError(f"--num-samples must be at least 1, not {args.num_samples}")
    if args.seed is not None:  # sample i uses seed + i; each must be a valid seed
        check_seed(args.seed, "--seed")
        check_seed(args.seed + args.num_samples - 1, "--seed plus --num-samples - 1")
    if args.prompt is None and not args.unconditional:
        raise NslmError("give a prompt, e.g. nslm generate --model RUN \"Once upon a time\", or --unconditional")
    model = load(args.model, device=args.device)
    for i in range(args.num_samples):
        seed = None if args.seed is None else args.seed + i
        stream = model.stream(args.prompt, max_tokens=args.max_tokens, temperature=args.temperature,
                              top_k=args.top_k, top_p=args.top_p, seed=seed, use_cache=not args.no_cache,
                              unconditional=args.unconditional)
        if i == 0 and stream.prompt_truncated:
            print(f"warning: the prompt is longer than the model's context of {model.context_length} tokens; "
                  "only its last part is used", file=sys.stderr)
        if i:
            print("\n" + "-" * 40)
        for piece in stream:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
        if not stream.story.ended:
            print(f"(stopped at --max-tokens {args.max_tokens} before the story ended)", file=sys.stderr)
    return 0
