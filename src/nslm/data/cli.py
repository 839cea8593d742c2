"""`nslm data prepare | clean | tokenize | match`: the data pipeline from the command line, and the data
folder made with a model's tokenizer."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from nslm.atomic import atomic_dir
from nslm.cli import HelpFormatter, positive_int
from nslm.data.cleaning import CleanConfig
from nslm.data.prepare import (DEFAULT_DEV_SHARE, DEFAULT_VALID_SHARE, NothingLeftError, clean_to_folder, prepare, read_cleaned,
                               tokenize_folder)
from nslm.data.report import print_clean_report
from nslm.data.tokens import DataFolder, folder_for_tokenizer
from nslm.errors import NslmError
from nslm.outputs import check_replaceable
from nslm.tokenizer import Tokenizer
from nslm.tokenizer.report import comparison_table, efficiency_report

PREPARE_EXAMPLE = """example:
  nslm data prepare --train TinyStories-train.txt --valid TinyStories-valid.txt --out data/ts
  nslm data prepare --train stories/ --out data/ts-word --tokenizer word --vocab-size 4096
  nslm data prepare --source hf --out data/ts-full --if-exists reuse    # downloads roneneldan/TinyStories
"""
CLEAN_EXAMPLE = """example:
  nslm data clean --train TinyStories-train.txt --valid TinyStories-valid.txt --out data/clean
  nslm data clean --train raw.txt --split-on blank-lines --no-near-dup --out data/clean
"""
TOKENIZE_EXAMPLE = """example:
  nslm data tokenize data/clean --tokenizer tokenizers/bpe-4096/tokenizer.json
"""
MATCH_EXAMPLE = """example:
  nslm data match --model tinystories-gru-1m data/*       # prints e.g. data/tinystories
  nslm eval all --model runs/tf1m --data "$(nslm data match --model runs/tf1m data/*)" --out reports/tf1m
"""


def add_clean_args(p: argparse.ArgumentParser) -> None:
    """Input and cleaning options shared by `prepare` and `clean`."""
    d = CleanConfig()
    p.add_argument("--train", nargs="+", metavar="FILE", help="training stories: files, folders or globs "
                   "(<|endoftext|>-separated text, JSON or JSONL with a story/text field)")
    p.add_argument("--valid", nargs="+", metavar="FILE", help="validation stories; without it a share of "
                   "--train is held out")
    p.add_argument("--source", choices=("files", "hf"), default="files",
                   help="'hf' downloads roneneldan/TinyStories from the Hugging Face hub when no --train is given")
    p.add_argument("--valid-share", type=float, default=DEFAULT_VALID_SHARE,
                   help="share of the input held out as validation when --valid is not given")
    p.add_argument("--dev-share", type=float, default=DEFAULT_DEV_SHARE,
                   help="share of the cleaned training stories set aside as the dev split, on which training keeps "
                   "its best checkpoint and sweeps pick recipes (0: none, as in folders made before)")
    p.add_argument("--train-share", type=float, default=1.0,
                   help="keep only this share of the cleaned training stories (a hash of each picks it; smaller shares "
                   "are subsets of larger ones; dev is kept whole), for studies of how much data a model needs")
    p.add_argument("--split-on", choices=("eot", "blank-lines", "lines"), default="eot",
                   help="how plain text files separate stories")
    p.add_argument("--max-stories", type=positive_int, help="read at most this many stories per split (quick tries)")
    g = p.add_argument_group("cleaning rules")
    g.add_argument("--no-fix-encoding", dest="fix_encoding", action="store_false", default=argparse.SUPPRESS,
                   help="do not repair mojibake such as â€™ with ftfy")
    g.add_argument("--no-normalize-whitespace", dest="normalize_whitespace", action="store_false", default=argparse.SUPPRESS,
                   help="keep spaces and blank lines as they are")
    g.add_argument("--no-normalize-quotes", dest="normalize_quotes", action="store_false", default=argparse.SUPPRESS,
                   help="keep curly quotes (by default they become straight quotes, and … becomes ...)")
    g.add_argument("--no-drop-incomplete", dest="drop_incomplete", action="store_false", default=argparse.SUPPRESS,
                   help="keep stories that do not end with . ! or ?")
    g.add_argument("--min-words", type=int, default=d.min_words, help="drop stories with fewer words (0: off)")
    g.add_argument("--max-words", type=int, default=d.max_words, help="drop stories with more words (0: off)")
    g.add_argument("--no-dedup", dest="dedup_exact", action="store_false", default=argparse.SUPPRESS,
                   help="keep exact duplicates (same letters and digits)")
    g.add_argument("--no-near-dup", dest="dedup_near", action="store_false", default=argparse.SUPPRESS, help="keep near duplicates")
    g.add_argument("--near-dup-threshold", type=float, default=d.near_threshold,
                   help="MinHash LSH Jaccard threshold on word 3-grams")
    g.add_argument("--num-perm", type=int, default=d.num_perm, help="MinHash permutations (memory grows with it)")
    g.add_argument("--no-leakage-check", dest="drop_leakage", action="store_false", default=argparse.SUPPRESS,
                   help="keep training stories that repeat validation stories")
    g.add_argument("--vocab-limit", type=int, metavar="N",
                   help="keep only stories whose words all lie in the N most frequent training words")


def config_from_args(args):
    def on(name: str) -> bool:  # the --no-... switches leave no attribute unless given
        return getattr(args, name, True)

    return CleanConfig(fix_encoding=on("fix_encoding"), normalize_whitespace=on("normalize_whitespace"),
                       normalize_quotes=on("normalize_quotes"), drop_incomplete=on("drop_incomplete"),
                       min_words=args.min_words, max_words=args.max_words, dedup_exact=on("dedup_exact"),
                       dedup_near=on("dedup_near"), near_threshold=args.near_dup_threshold,
                       num_perm=args.num_perm, drop_leakage=on("drop_leakage"), vocab_limit=args.vocab_limit)


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="read, clean and tokenize TinyStories",
                                 description="Read, clean and tokenize TinyStories into a data folder.",
                                 epilog=PREPARE_EXAMPLE, formatter_class=HelpFormatter)
    data.set_defaults(func=lambda args: _print_help(data))
    sub = data.add_subparsers(dest="data_command", metavar="STEP")

    p = sub.add_parser("prepare", help="the whole pipeline: clean, train a tokenizer, write token files",
                       description="Clean the stories, train a tokenizer and write token files into one data "
                       "folder: train.txt, valid.txt, report.json, tokenizer.json, train.bin, valid.bin, meta.json.",
                       epilog=PREPARE_EXAMPLE, formatter_class=HelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="data folder to create")
    add_clean_args(p)
    p.add_argument("--tokenizer", "--kind", dest="kind", default="bpe",
                   help="tokenizer kind: bpe (byte-level BPE), word (words with <unk>) or char")
    p.add_argument("--vocab-size", type=int, help="vocabulary size incl. special tokens (default: 4096 for "
                   "bpe and word, every character seen for char)")
    p.add_argument("--tokenizer-sample", type=positive_int, metavar="N", help="train the tokenizer on the first N "
                   "cleaned training stories only (fast on the full 2.1M-story corpus)")
    p.add_argument("--if-exists", choices=("error", "reuse", "overwrite"), default="error",
                   help="when --out exists: stop, reuse it if it holds the same dataset, or replace it")
    p.add_argument("--quiet", action="store_true", help="no progress bars and tables")
    p.set_defaults(func=run_prepare)

    c = sub.add_parser("clean", help="only clean: write train.txt, valid.txt and report.json",
                       description="Clean stories into a folder: train.txt, valid.txt (each story followed by "
                       "a line <|endoftext|>) and report.json.", epilog=CLEAN_EXAMPLE, formatter_class=HelpFormatter)
    c.add_argument("--out", required=True, type=Path, help="folder to create")
    add_clean_args(c)
    c.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    c.add_argument("--quiet", action="store_true", help="no progress bars and tables")
    c.set_defaults(func=run_clean)

    t = sub.add_parser("tokenize", help="only tokenize: write train.bin, valid.bin and meta.json",
                       description="Encode the cleaned train.txt and valid.txt of a folder into train.bin and "
                       "valid.bin (uint16 when the vocabulary fits, else uint32) with their header meta.json.",
                       epilog=TOKENIZE_EXAMPLE, formatter_class=HelpFormatter)
    t.add_argument("folder", type=Path, help="folder holding train.txt and valid.txt (from nslm data clean)")
    t.add_argument("--tokenizer", type=Path, help="tokenizer.json to use; it is copied into the folder "
                   "(default: the folder's own tokenizer.json)")
    t.set_defaults(func=run_tokenize)

    m = sub.add_parser("match", help="print the data folder made with a model's tokenizer",
                       description="Print the first of the given data folders whose token files were made with "
                       "the model's tokenizer (the tokenizer hash in its config.json), so that a script can "
                       "evaluate each model on data in its own tokens.", epilog=MATCH_EXAMPLE,
                       formatter_class=HelpFormatter)
    m.add_argument("--model", required=True, metavar="RUN", help="run folder made by `nslm train` (or a shipped "
                   "model name)")
    m.add_argument("folders", nargs="+", type=Path, metavar="DIR", help="data folders to look in, in this order")
    m.set_defaults(func=run_match)


def run_match(args) -> int:
    from nslm.generate.api import resolve  # a shipped model's name -> its folder
    from nslm.train.run import read_run_config  # the one reader of a run's config.json

    config = read_run_config(resolve(args.model))
    print(folder_for_tokenizer(config["tokenizer_sha256"], args.folders, whose=str(args.model)))
    return 0


def _print_help(parser) -> int:
    parser.print_help()
    return 2


def run_prepare(args) -> int:
    from rich.console import Console  # rich: only when a report is printed

    with _table_when_nothing_left(args.quiet):
        result = prepare(args.train, args.valid, args.out, tokenizer_kind=args.kind, vocab_size=args.vocab_size,
                         config=config_from_args(args), valid_share=args.valid_share, dev_share=args.dev_share,
                         split_on=args.split_on,
                         source=args.source, tokenizer_sample=args.tokenizer_sample, max_stories=args.max_stories,
                         train_share=args.train_share, if_exists=args.if_exists, progress=not args.quiet)
    console = Console()
    if result.reused:
        console.print(f"{result.path} already holds this dataset; reusing it.")
    if not args.quiet:
        print_clean_report(result.report, console)
        _print_efficiency(result.path, console)
    meta = result.meta
    console.print(f"wrote {result.path}: " + ", ".join(
        f"{s} {meta[s]['stories']:,} stories / {meta[s]['tokens']:,} tokens" for s in DataFolder(result.path).splits)
        + f" ({meta['tokenizer_kind']}, vocabulary {meta['vocab_size']:,}, {meta['dtype']})")
    return 0


@contextlib.contextmanager
def _table_when_nothing_left(quiet: bool):
    """When cleaning leaves nothing, show the per-rule table before the one-line error."""
    try:
        yield
    except NothingLeftError as exc:
        if not quiet:
            print_clean_report(exc.report)
        raise


def _print_efficiency(folder: Path, console) -> None:
    tok = Tokenizer.load(folder / "tokenizer.json")
    stories = list(read_cleaned(folder / "valid.txt"))[:2000]
    console.print(comparison_table([efficiency_report(tok, stories, name=f"{tok.kind}-{tok.vocab_size}")]))


def run_clean(args) -> int:
    out = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise NslmError(f"output folder {out} already exists; pass --overwrite or choose another --out")
    inputs = [] if args.source == "hf" else [*(args.train or []), *(args.valid or [])]
    check_replaceable(out, "--out", "an earlier cleaned folder (one with train.txt and valid.txt)",
                      lambda folder: (folder / "train.txt").is_file() and (folder / "valid.txt").is_file(),
                      sources=[p for p in inputs if Path(p).exists()])
    config = config_from_args(args)
    with _table_when_nothing_left(args.quiet), atomic_dir(out, replace=True) as tmp:
        report = clean_to_folder(tmp, args.train, args.valid, config=config, valid_share=args.valid_share,
                                 dev_share=args.dev_share, split_on=args.split_on, source=args.source, max_stories=args.max_stories,
                                 train_share=args.train_share, progress=not args.quiet)
    if not args.quiet:
        print_clean_report(report)
    dev = report["dev"]["stories"]
    print(f"wrote {out}: train {report['train']['stories_out'] - dev:,} stories, dev {dev:,}, "
          f"valid {report['valid']['stories_out']:,}")
    return 0


def run_tokenize(args) -> int:
    folder = args.folder
    if not folder.is_dir():
        raise NslmError(f"folder {folder} does not exist; make it with nslm data clean")
    for split in ("train", "valid"):
        if not (folder / f"{split}.txt").is_file():
            raise NslmError(f"{folder} has no {split}.txt; make it with nslm data clean")
    source = args.tokenizer or folder / "tokenizer.json"
    tokenizer = Tokenizer.load(source)
    # with --tokenizer, its files are copied in beside the ids (the header's hash names them); every input is
    # checked and every file written aside first, so a refusal leaves the folder as it was
    meta = tokenize_folder(folder, tokenizer, progress=True, save_tokenizer=args.tokenizer is not None)
    written = ", ".join(f"{s}.bin ({meta[s]['tokens']:,} tokens)" for s in DataFolder(folder).splits)
    print(f"wrote {folder}: {written} and meta.json ({meta['dtype']})")
    return 0
