"""`nslm train`: train a preset on a data folder, with limits, overrides, resume and torchrun."""

from __future__ import annotations

import argparse
import sys

from nslm.cli import HelpFormatter
from nslm.device import DEVICES, DTYPES, is_main_process
from nslm.errors import NslmError
from nslm.models import build_model, list_presets, load_preset, preset_description
from nslm.train.run import prepare_run, train_run

EXAMPLE = """examples:
  nslm train --preset transformer-1m --data data/ts --out runs/tf1m --max-minutes 10
  nslm train --preset lstm-1m --data data/ts --out runs/lstm --max-steps 2000 --set train.lr=3e-3
  nslm train --resume runs/tf1m --max-minutes 20          # continue where it stopped
  torchrun --nproc_per_node=2 -m nslm train --preset transformer-1m --data data/ts --out runs/ddp
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a story model on a prepared data folder",
                              description="Train a model preset on a data folder made by `nslm data prepare`. "
                              "Ctrl-C or SIGTERM saves a checkpoint; --resume continues exactly.",
                              epilog=EXAMPLE, formatter_class=HelpFormatter)
    p.add_argument("--preset", help="model preset (nslm train --list-presets); default transformer-1m")
    p.add_argument("--data", help="data folder made by `nslm data prepare` (on --resume: default the run's own)")
    p.add_argument("--out", help="new run folder, e.g. runs/NAME")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder from its last checkpoint")
    limits = p.add_argument_group("limits (the first reached ends the run; default --max-steps 2000)")
    limits.add_argument("--max-minutes", type=float)
    limits.add_argument("--max-tokens", type=int)
    limits.add_argument("--max-steps", type=int)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override any setting, e.g. --set model.n_layer=6 --set train.lr=1e-3 (repeatable)")
    p.add_argument("--config", metavar="FILE", help="JSON or TOML file with 'preset', 'model' and 'train' tables")
    p.add_argument("--device", choices=DEVICES, default=None, help="default auto")
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="auto: bf16 autocast where the hardware has it natively, else fp32")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (default: on for a Transformer on a CUDA GPU, off elsewhere)")
    p.add_argument("--list-presets", action="store_true", help="list the model presets and exit")
    p.set_defaults(func=run)


def list_presets_table() -> None:
    for name in list_presets():
        counts = build_model(load_preset(name)).param_counts()
        print(f"{name:16} {counts['total'] / 1e6:5.2f}M params  {preset_description(name)}")


def run(args: argparse.Namespace) -> int:
    if args.list_presets:
        list_presets_table()
        return 0
    if args.resume and args.out:
        raise NslmError("give either --resume RUN or --out RUN, not both")
    options = {"max_minutes": args.max_minutes, "max_tokens": args.max_tokens, "max_steps": args.max_steps,
               "device": args.device, "dtype": args.dtype, "compile": args.compile}
    run_config, run_dir = prepare_run(out=args.out, data=args.data, preset=args.preset, config_file=args.config,
                                      overrides=args.set, train_options=options, resume=args.resume)
    result = train_run(run_config, run_dir, resume=bool(args.resume))
    if is_main_process():
        best = result["best_val_loss"]
        split = "dev" if result.get("selected_by") == "dev" else "validation"
        best_text = f", best {split} loss {best:.4f}" if best != float("inf") else ""
        if result["state"] == "stopped":
            print(f"stopped at step {result['step']}{best_text}; continue with: nslm train --resume {run_dir}", file=sys.stderr)
        else:
            print(f"finished {result['step']} steps in {result['elapsed_s']:.0f} s{best_text}; "
                  f"try: nslm generate --model {run_dir} \"Once upon a time\"", file=sys.stderr)
    return 0
