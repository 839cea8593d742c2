"""The `nslm` command: one subcommand per pipeline stage, each defined beside the code it drives.

Every area's `cli` module exposes `register(subparsers)`, which adds its subcommand and sets
`func(args) -> int | None` on the parsed namespace. Heavy imports stay inside those functions so
that `nslm --help` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from nslm import __version__
from nslm.errors import NslmError
from nslm.outputs import check_output_options

# Subcommands in pipeline order: data -> tokenizer -> train -> generate -> eval -> export -> gui, and bench.
AREAS = (
    "nslm.data.cli",
    "nslm.data.tokenizer_cli",  # beside data/: it reads story files, which tokenizer/ must not
    "nslm.train.cli",
    "nslm.generate.cli",
    "nslm.eval.cli",
    "nslm.interop.cli",
    "nslm.sweep.cli",
    "nslm.gui.cli",
    "nslm.bench.cli",
)

EPILOG = """example, from TinyStories text to a story:
  nslm data prepare --train TinyStories-train.txt --valid TinyStories-valid.txt --out data/ts
  nslm train --preset transformer-1m --data data/ts --out runs/tf1m --max-minutes 10
  nslm generate --model runs/tf1m "Once upon a time"
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps hand-written examples as they are and shows real defaults (not None or False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "%(default)" in text or default in (None, False, [], argparse.SUPPRESS):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            text += " (default: %(default)s)"
        return text


def int_up_to(high: int):
    """argparse type for a count of 1 to `high` (a bound that keeps a typo from running for days)."""
    def parse(text: str) -> int:
        value = positive_int(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:,}, not {value:,}")
        return value

    parse.__name__ = "whole number"
    return parse


def positive_int(text: str) -> int:
    """argparse type for counts and limits: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's one error shape: a bad argument is one `error:` line and exit 2.

    Every subcommand's parser is of this class too (argparse makes subparsers of the parent's type).
    """

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="nslm",
        description="Train, sample and evaluate small story language models on TinyStories.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"nslm {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in AREAS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user mistakes print one `error:` line and return a non-zero code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        check_output_options(args)
        code = args.func(args)
    except NslmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk or a file taken away while running: still one sentence
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: cannot read or write{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
