"""`nslm eval ...`: one subcommand per measure, and `nslm eval all` for the side-by-side report.

The options of `nslm eval all` (and its `--skip` choices) come from the step table
`nslm.eval.steps.STEPS`; the measure subcommands reuse its rows where they take the same option.
Heavy imports (torch, through the measures) stay inside the commands so that `--help` answers at once.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from nslm.atomic import atomic_write_json
from nslm.cli import HelpFormatter, positive_int
from nslm.errors import NslmError
from nslm.eval import genset
from nslm.eval.datasets import find_data
from nslm.eval.render import fmt
from nslm.eval.steps import STEP_NAMES, STEPS, Option, all_options, model_data_dir

DESCRIPTION = """Measure trained story models: likelihood (bits per byte), generated stories, novelty
against the training stories, grammar (BLiMP, CoLA), HellaSwag, an LLM grader and human ratings."""

EPILOG = """examples:
  nslm eval all --model runs/tf1m --model runs/lstm1m --data data/ts --out reports/cmp --quick
  nslm eval likelihood --model runs/tf1m --data data/ts
  nslm eval human --db ~/.nslm/ratings.sqlite
"""


def _step_options(name: str) -> dict[str, Option]:
    return {o.field: o for s in STEPS if s.name == name for o in s.options}


def _add(p, opt: Option, *, quick_note: bool = False, flag: str | None = None, **overrides) -> None:
    """Add one table option to a parser: with its default for a measure command, None for `all` (filled later)."""
    help_text = opt.help
    if quick_note:
        shown = [f"default {opt.default}"] if opt.default is not None else []
        shown += [f"{opt.quick:,} with --quick" if isinstance(opt.quick, int) else f"{opt.quick} with --quick"] \
            if opt.quick is not None else []
        help_text += f" ({'; '.join(shown)})" if shown else ""
    counts = opt.type is int and opt.field != "judge_retries"  # zero retries is a valid choice
    kwargs = dict(type=positive_int if counts else opt.type, metavar=opt.metavar, help=help_text, default=None if quick_note else opt.default)
    kwargs.update(overrides)
    p.add_argument(flag or opt.flag, dest=opt.field, **kwargs)


def _sub(subs, name: str, help: str, example: str) -> argparse.ArgumentParser:
    return subs.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}",
                           formatter_class=HelpFormatter)


def _model_arg(p, many=False):
    if many:
        p.add_argument("--model", action="append", required=True, metavar="RUN",
                       help="run folder (or shipped model name); repeat to compare models")
    else:
        p.add_argument("--model", required=True, metavar="RUN", help="run folder made by `nslm train` (or a shipped model name)")


def _seed_arg(p, what="the seed of every random sample (and story i's seed is seed + i)"):
    p.add_argument("--seed", type=int, default=1234, help=what)


def _json_arg(p):
    p.add_argument("--json", metavar="FILE", nargs="?", const="-",
                   help="also write the full result as JSON to FILE; alone, print it as the last line of stdout")


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="evaluate trained models (bits per byte, novelty, grammar, ...)",
                                   description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
    subs = parser.add_subparsers(dest="eval_command", metavar="MEASURE")

    p = _sub(subs, "likelihood", "validation loss, perplexity and bits per byte on a data folder's valid split",
             "nslm eval likelihood --model runs/tf1m --data data/ts")
    _model_arg(p)
    p.add_argument("--data", metavar="DIR", help="data folder (default: the one in the run's config.json)")
    p.add_argument("--max-tokens", type=positive_int, metavar="N", help="use only the first whole stories within this many tokens")
    _add(p, _step_options("likelihood")["stride"])
    _add(p, _step_options("likelihood")["raw_valid"])
    _json_arg(p)
    p.set_defaults(func=cmd_likelihood)

    p = _sub(subs, "generate", "generate one story per evaluation prompt with a fixed seed, saved as JSONL",
             "nslm eval generate --model runs/tf1m --out stories.jsonl")
    _model_arg(p)
    p.add_argument("--out", required=True, help="JSONL file to write (prompt, completion, tokens, ended)")
    for opt in _step_options("generate").values():
        _add(p, opt)
    _seed_arg(p, "story i uses seed + i")
    p.set_defaults(func=cmd_generate, out_is_file=True)

    p = _sub(subs, "novelty", "nearest training story, n-gram overlap and longest common substring of generated stories",
             "nslm eval novelty --data data/ts --stories stories.jsonl")
    p.add_argument("--data", required=True, metavar="DIR", help="data folder whose train.txt the model learned from")
    p.add_argument("--stories", help="generated stories (JSONL from `nslm eval generate`); without it only the index is built")
    for opt in _step_options("novelty").values():
        _add(p, opt)
    p.add_argument("--top", type=positive_int, default=5, help="how many most-similar pairs to show")
    _json_arg(p)
    p.set_defaults(func=cmd_novelty)

    p = _sub(subs, "blimp", "BLiMP minimal pairs, zero-shot (ties count as wrong)",
             "nslm eval blimp --model runs/tf1m --blimp-limit 50")
    _model_arg(p)
    for opt in _step_options("blimp").values():
        _add(p, opt)
    _seed_arg(p)
    _json_arg(p)
    p.set_defaults(func=cmd_blimp)

    p = _sub(subs, "cola", "CoLA: linear probe on the frozen model's features, Matthews correlation",
             "nslm eval cola --model runs/tf1m --cola-limit 2000")
    _model_arg(p)
    for opt in _step_options("cola").values():
        _add(p, opt)
    _seed_arg(p)
    _json_arg(p)
    p.set_defaults(func=cmd_cola)

    p = _sub(subs, "hellaswag", "HellaSwag zero-shot accuracy, per-character normalised (chance 25%%)",
             "nslm eval hellaswag --model runs/tf1m --limit 500")
    _model_arg(p)
    hs = _step_options("hellaswag")
    _add(p, hs["hellaswag"])
    _add(p, hs["hellaswag_limit"], flag="--limit")
    _seed_arg(p)
    _json_arg(p)
    p.set_defaults(func=cmd_hellaswag)

    p = _sub(subs, "judge", "grade generated stories with an OpenAI-compatible LLM (the TinyStories paper's rubric)",
             "NSLM_JUDGE_API_KEY=sk-... nslm eval judge --stories stories.jsonl --judge-url https://api.openai.com/v1")
    p.add_argument("--stories", required=True, help="JSONL from `nslm eval generate`")
    for opt in _step_options("judge").values():
        _add(p, opt, required=opt.field == "judge_url")
    _json_arg(p)
    p.set_defaults(func=cmd_judge)

    p = _sub(subs, "human", "summarise the human ratings stored in the SQLite database, per model",
             "nslm eval human --db ~/.nslm/ratings.sqlite")
    p.add_argument("--db", help="ratings database (default: $NSLM_HOME/ratings.sqlite, NSLM_HOME=~/.nslm)")
    p.add_argument("--list", action="store_true", help="also list every rating, newest first")
    _json_arg(p)
    p.set_defaults(func=cmd_human)

    p = _sub(subs, "all", "every measure for one or more models, and a side-by-side report folder",
             "nslm eval all --model runs/tf1m --model runs/lstm1m --data data/ts --out reports/cmp --quick")
    _model_arg(p, many=True)
    p.add_argument("--data", metavar="DIR", help="data folder (valid split for likelihood, train.txt for novelty)")
    p.add_argument("--out", required=True, metavar="DIR", help="report folder (results.json, report.md, report.html, plots)")
    p.add_argument("--quick", action="store_true",
                   help="small slices for the limits not given: " + ", ".join(
                       f"{o.flag} {o.quick:,}" for o in all_options() if o.quick is not None))
    p.add_argument("--skip", action="append", default=[], choices=STEP_NAMES, help="leave out a step (repeatable)")
    _seed_arg(p)
    for opt in all_options():
        _add(p, opt, quick_note=True)
    p.set_defaults(func=cmd_all)


# ---------------------------------------------------------------- output
def _table(title: str, columns: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def _emit(result: dict, args, lines: list, console: Console | None = None) -> int:
    """Print lines (text or rich tables); with --json, also write the whole result."""
    from nslm.eval.report import jsonable

    console = console or Console()
    for line in lines:
        console.print(line, markup=False, highlight=False) if isinstance(line, str) else console.print(line)
    if getattr(args, "json", None) == "-":  # --json alone: the result object as the last line of stdout
        print(json.dumps(jsonable(result)))
        return 0
    if getattr(args, "json", None):
        atomic_write_json(args.json, jsonable(result))
        print(f"wrote {args.json}")
    return 0


def _load(args):
    from nslm.eval.report import load_story_model

    return load_story_model(args.model)


def cmd_likelihood(args) -> int:
    from nslm.eval.likelihood import evaluate_likelihood

    model = _load(args)
    data = args.data or model_data_dir(model, None)
    if not data:
        raise NslmError("no data folder given and the run's own is gone; give one with --data.")
    r = evaluate_likelihood(model, data, args.max_tokens, args.stride, raw_valid=args.raw_valid)
    lines = [f"model {args.model} on {data} ({r['scope']}: {r['tokens']:,} tokens, {r['bytes']:,} bytes)",
             f"  validation loss  {r['loss']:.4f} nats/token",
             f"  perplexity       {r['perplexity']:.3f}",
             f"  bits per byte    {r['bits_per_byte']:.4f}"
             + (f" ± {r['bits_per_byte_se']:.4f} (one standard error over stories)" if r.get("bits_per_byte_se") else "")
             + " (every prediction, end-of-story included)",
             f"  bits per byte    {r['bits_per_byte_excl_eos']:.4f} (stories' own tokens only, each after "
             "end-of-story: comparable across projects)"]
    if r.get("raw_text"):
        raw = r["raw_text"]
        lines.append(f"  bits per byte    {raw['bits_per_byte']:.4f} on the raw published text ({raw['stories']} stories, "
                     f"{raw['bytes']:,} bytes of {raw['file']}; {raw['bits_per_byte_excl_eos']:.4f} own tokens only)")
    if r.get("unk"):
        lines.append(f"  <unk> targets    {r['unk']['tokens']:,} ({r['unk']['rate']:.2%}); loss over known tokens "
                     f"{r['unk']['loss_known_tokens']:.4f} ({r['unk']['how_counted']})")
    return _emit(r, args, lines)


def cmd_generate(args) -> int:
    model = _load(args)
    prompts = genset.load_prompts(args.prompts)[: args.prompt_limit or None]
    records = genset.generate_set(model, prompts, seed=args.seed, max_tokens=args.max_new_tokens,
                                  temperature=args.temperature)
    genset.save_jsonl(records, args.out)
    ended = sum(r["ended"] for r in records)
    print(f"wrote {len(records)} stories to {args.out} ({ended} ended by themselves) "
          f"from {genset.prompt_set(args.prompts)}")
    return 0


def cmd_novelty(args) -> int:
    from nslm.eval import novelty

    # the stories are read first, so a bad file is refused before an index is built or written
    stories = genset.load_jsonl(args.stories) if args.stories else None
    index = novelty.NoveltyIndex.load_or_build(args.data, args.novelty_limit, args.index_dir)
    lines = [f"novelty index: {len(index):,} training stories in {index.folder}"]
    if stories is None:
        return _emit(index.meta, args, lines)
    r = novelty.novelty_report(index, stories, top=args.top)
    lines.append(_table(f"novelty of {r['stories']} stories", ["measure", "value"], [
        ["mean cosine to nearest story", f"{r['mean_max_cosine']:.3f} (median {r['median_max_cosine']:.3f})"],
        ["4-grams seen in training", fmt(r["ngram4_overlap"], "{:.1%}")],
        ["5-grams seen in training", fmt(r["ngram5_overlap"], "{:.1%}")],
        ["longest common substring", f"mean {r['mean_lcs_chars']:.0f} chars, max {r['max_lcs_chars']}"]]))
    lines.append(r["how_counted"])
    for item in r["most_similar"]:
        # a completion of fewer than 4 words has no 4-gram of its own: its overlap is None, shown as a dash
        lines += ["", f"cosine {item['cosine']:.3f}, 4-gram overlap {fmt(item['ngram4_overlap'], '{:.0%}')}:",
                  f"  generated: {item['text'][:300]}", f"  training:  {item['nearest_story'][:300]}"]
    return _emit(r, args, lines)


def cmd_blimp(args) -> int:
    from nslm.eval.grammar import evaluate_blimp

    r = evaluate_blimp(_load(args), find_data("blimp", args.blimp), args.blimp_limit, seed=args.seed)
    title = (f"BLiMP accuracy {r['accuracy']:.1%} ± {r['accuracy_se']:.1%} on {r['pairs']:,} pairs "
             f"(chance 50%, {r['ties']} ties counted wrong)")
    lines = [_table(title, ["phenomenon", "accuracy"], [[k, f"{v:.1%}"] for k, v in r["by_phenomenon"].items()])]
    return _emit(r, args, lines)


def cmd_cola(args) -> int:
    from nslm.eval.grammar import evaluate_cola

    r = evaluate_cola(_load(args), find_data("cola", args.cola), args.cola_limit, seed=args.seed)
    rows = [[name, f"{r[name]['mcc']:.3f} ± {r[name]['mcc_se']:.3f}", f"{r[name]['accuracy']:.1%}",
             f"{r[name]['majority_accuracy']:.1%}"] for name in ("in_domain_dev", "out_of_domain_dev") if name in r]
    title = f"CoLA ({r['head']}, {r['train_rows']:,} training rows)"
    return _emit(r, args, [_table(title, ["dev set", "MCC", "accuracy", "majority class"], rows)])


def cmd_hellaswag(args) -> int:
    from nslm.eval.hellaswag import evaluate_hellaswag

    r = evaluate_hellaswag(_load(args), find_data("hellaswag", args.hellaswag), args.hellaswag_limit, seed=args.seed)
    lines = [f"HellaSwag accuracy {r['accuracy']:.1%} ± {r['accuracy_se']:.1%} (chance 25%) on {r['items']:,} items, "
             f"unnormalised {r['accuracy_unnormalised']:.1%}",
             f"  normalisation: {r['normalisation']}", f"  data: {r['differs_from_original']}"]
    return _emit(r, args, lines)


def cmd_judge(args) -> int:
    from nslm.eval import judge

    grader = judge.judge_from_args(args.judge_url, args.judge_model, args.judge_key_env, args.judge_timeout,
                                   args.judge_retries)
    r = judge.grade_stories(grader, genset.load_jsonl(args.stories))
    title = f"graded {r['graded']} of {r['stories']} stories with {r['judge_model']} ({r['missing']} missing)"
    lines = [_table(title, ["criterion", "mean /10"],
                    [[k, f"{v:.2f}" if v is not None else "–"] for k, v in r["means"].items()])]
    if r["age_groups"]:
        lines.append("age groups: " + ", ".join(f"{k}: {v}" for k, v in sorted(r["age_groups"].items())))
    return _emit(r, args, lines)


def cmd_human(args) -> int:
    from nslm.eval.human import RatingStore, default_db_path

    if args.db is None and not default_db_path().is_file():  # a summary never creates the database
        return _emit({}, args, [f"no ratings yet in {default_db_path()}"])
    store = RatingStore(args.db, create=False)
    summary = store.summary()
    if not summary:
        lines = [f"no ratings yet in {store.path}"]
    else:
        lines = [_table(f"ratings in {store.path}", ["model", "ratings", "raters", "grammar", "creativity", "consistency"],
                        [[m, str(s["ratings"]), str(s["raters"]), f"{s['grammar']:.2f}", f"{s['creativity']:.2f}",
                          f"{s['consistency']:.2f}"] for m, s in summary.items()])]
    if args.list:
        for r in store.ratings():
            lines.append(f"  #{r.id} {r.model} by {r.rater}: grammar {r.grammar}, creativity {r.creativity}, "
                         f"consistency {r.consistency}  {r.comment}")
    return _emit(summary, args, lines)


def cmd_all(args) -> int:
    from nslm.generate.api import resolve

    for run in args.model:  # an unknown name is refused before the report folder is made (run_all checks paths)
        if Path(run).name == run and not Path(run).exists():
            resolve(run)
    from nslm.eval.render import summary_rows
    from nslm.eval.report import EvalOptions, run_all

    opts = EvalOptions(seed=args.seed, steps=tuple(s for s in STEP_NAMES if s not in args.skip),
                       **{o.field: getattr(args, o.field) for o in all_options()})
    if args.quick:
        opts.apply_quick()
    results = run_all(args.model, args.data, args.out, opts)
    console = Console()
    console.print(_table("evaluation (± one standard error)", ["measure", *results["models"]], summary_rows(results)))
    for n, res in results["models"].items():
        for step, why in res["skipped"].items():
            console.print(f"{n}: {step} skipped: {why}", markup=False, highlight=False)
    print(f"report: {Path(args.out) / 'report.md'} and report.html ({results['seconds']:.0f} s)")
    return 0
