"""`nslm tokenizer train | report`: train one tokenizer, or compare several on validation stories.

This face lives in data/ because it reads story files (`nslm.data.reading`), and tokenizer/ sits
below data/ (data prepare trains and applies tokenizers), so tokenizer/ never imports data/.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nslm.atomic import atomic_dir, atomic_write_json
from nslm.cli import HelpFormatter, positive_int
from nslm.data.reading import MAX_STORY_CHARS, read_stories
from nslm.errors import NslmError
from nslm.tokenizer import check_kind_and_size, train_tokenizer
from nslm.tokenizer.report import compare_tokenizers, comparison_markdown, comparison_table

TRAIN_EXAMPLE = """example:
  nslm tokenizer train --kind bpe --vocab-size 4096 --input data/ts/train.txt --out tokenizers/bpe-4096
  nslm tokenizer train --kind word --vocab-size 4096 --input data/ts/train.txt --out tokenizers/word-4096
"""
REPORT_EXAMPLE = """example:
  nslm tokenizer report tokenizers/bpe-4096/tokenizer.json tokenizers/word-4096/tokenizer.json \\
      tokenizers/char/tokenizer.json --valid data/ts/valid.txt
"""


def register(subparsers) -> None:
    tok = subparsers.add_parser("tokenizer", help="train tokenizers and compare their efficiency",
                                description="Train byte-level BPE, word-level or char-level tokenizers "
                                "(Hugging Face tokenizers) and compare them.",
                                epilog=TRAIN_EXAMPLE + REPORT_EXAMPLE, formatter_class=HelpFormatter)
    tok.set_defaults(func=lambda args: (tok.print_help(), 2)[1])
    sub = tok.add_subparsers(dest="tokenizer_command", metavar="STEP")

    t = sub.add_parser("train", help="train a tokenizer on stories",
                       description="Train a tokenizer and save tokenizer.json (+ casing.json for word-level).",
                       epilog=TRAIN_EXAMPLE, formatter_class=HelpFormatter)
    t.add_argument("--kind", default="bpe", help="bpe (byte-level BPE), word (words with <unk>) or char")
    t.add_argument("--vocab-size", type=int, help="vocabulary size incl. special tokens (default: 4096 for "
                   "bpe and word, every character seen for char)")
    t.add_argument("--input", nargs="+", required=True, metavar="FILE",
                   help="story files (e.g. a cleaned train.txt), folders or globs")
    t.add_argument("--split-on", choices=("eot", "blank-lines", "lines"), default="eot",
                   help="how plain text files separate stories")
    t.add_argument("--sample", type=positive_int, metavar="N", help="train on the first N stories only")
    t.add_argument("--out", required=True, type=Path, help="folder for tokenizer.json")
    t.set_defaults(func=run_train)

    r = sub.add_parser("report", help="efficiency of one or several tokenizers, side by side",
                       description="Bytes per token, tokens per story, <unk> rate, vocabulary used and exact "
                       "round trips of each tokenizer on validation stories.",
                       epilog=REPORT_EXAMPLE, formatter_class=HelpFormatter)
    r.add_argument("tokenizers", nargs="+", type=Path, help="tokenizer.json files (or folders holding one)")
    r.add_argument("--valid", nargs="+", required=True, metavar="FILE", help="validation stories")
    r.add_argument("--max-stories", type=positive_int, default=5000, help="measure on at most this many stories")
    r.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    r.add_argument("--markdown", action="store_true", help="print a Markdown table instead of a rich table")
    r.set_defaults(func=run_report)


def run_train(args) -> int:
    check_kind_and_size(args.kind, args.vocab_size)
    if args.out.exists() and (args.out / "tokenizer.json").exists():
        raise NslmError(f"{args.out} already holds a tokenizer.json; choose another --out")
    oversized = []
    stories = read_stories(args.input, args.split_on, oversized.append)
    if args.sample:
        stories = (s for i, s in zip(range(args.sample), stories))
    tokenizer = train_tokenizer(args.kind, stories, args.vocab_size)
    if args.out.exists():
        tokenizer.save(args.out)
    else:
        with atomic_dir(args.out) as tmp:
            tokenizer.save(tmp)
    if oversized:
        what = "a story" if len(oversized) == 1 else f"{len(oversized):,} stories"
        print(f"left out {what} over the {MAX_STORY_CHARS:,}-character ceiling, the first at "
              f"{oversized[0].source}", file=sys.stderr)
    print(f"wrote {args.out / 'tokenizer.json'} ({tokenizer.kind}, vocabulary {tokenizer.vocab_size:,})")
    return 0


def run_report(args) -> int:
    from rich.console import Console  # rich: only when a report is printed

    stories = [s for _, s in zip(range(args.max_stories), read_stories(args.valid))]
    reports = compare_tokenizers(args.tokenizers, stories)
    if args.markdown:
        print(comparison_markdown(reports))
    else:
        Console().print(comparison_table(reports))
    if args.json:
        atomic_write_json(args.json, reports)
    return 0


__all__ = ["register"]
