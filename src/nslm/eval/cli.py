"""`nslm eval ...`: one subcommand per measure, and `nslm eval all` for the side-by-side report."""

from __future__ import annotations

import argparse
from pathlib import Path

from nslm.cli import positive_int
from nslm.errors import NslmError

DESCRIPTION = """Measure trained story models: likelihood (bits per byte), generated stories, novelty
against the training stories, grammar (BLiMP, CoLA), HellaSwag, an LLM grader and human ratings."""

EPILOG = """examples:
  nslm eval all --model runs/tf1m --model runs/lstm1m --data data/ts --out reports/cmp --quick
  nslm eval likelihood --model runs/tf1m --data data/ts
  nslm eval human --db ~/.nslm/ratings.sqlite
"""


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the examples as written; shows a default only when there is one."""

    def _get_help_string(self, action):
        if action.default in (None, False, []) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _sub(subs, name: str, help: str, example: str) -> argparse.ArgumentParser:
    return subs.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}",
                           formatter_class=_Formatter)


def _model_arg(p, many=False):
    if many:
        p.add_argument("--model", action="append", required=True, metavar="RUN",
                       help="run folder (or shipped model name); repeat to compare models")
    else:
        p.add_argument("--model", required=True, metavar="RUN", help="run folder made by `nslm train` (or a shipped model name)")


def _json_arg(p):
    p.add_argument("--json", metavar="FILE", help="also write the full result as JSON here")


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="evaluate trained models (bits per byte, novelty, grammar, ...)",
                                   description=DESCRIPTION, epilog=EPILOG, formatter_class=_Formatter)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
    subs = parser.add_subparsers(dest="eval_command", metavar="MEASURE")

    p = _sub(subs, "likelihood", "validation loss, perplexity and bits per byte on a data folder's valid split",
             "nslm eval likelihood --model runs/tf1m --data data/ts")
    _model_arg(p)
    p.add_argument("--data", metavar="DIR", help="data folder (default: the one in the run's config.json)")
    p.add_argument("--max-tokens", type=positive_int, metavar="N", help="use only the first whole stories within this many tokens")
    p.add_argument("--stride", type=positive_int, help="window stride in tokens (default: half the context)")
    _json_arg(p)
    p.set_defaults(func=cmd_likelihood)

    p = _sub(subs, "generate", "generate one story per evaluation prompt with a fixed seed, saved as JSONL",
             "nslm eval generate --model runs/tf1m --out stories.jsonl")
    _model_arg(p)
    p.add_argument("--out", required=True, help="JSONL file to write (prompt, completion, tokens, ended)")
    _gen_args(p)
    p.set_defaults(func=cmd_generate)

    p = _sub(subs, "novelty", "nearest training story, n-gram overlap and longest common substring of generated stories",
             "nslm eval novelty --data data/ts --stories stories.jsonl")
    p.add_argument("--data", required=True, metavar="DIR", help="data folder whose train.txt the model learned from")
    p.add_argument("--stories", help="generated stories (JSONL from `nslm eval generate`); without it only the index is built")
    p.add_argument("--index-limit", type=positive_int, metavar="N", help="index only the first N training stories (default: all)")
    p.add_argument("--index-dir", metavar="DIR", help="where the index lives (default: <data>/novelty-index)")
    p.add_argument("--top", type=positive_int, default=5, help="how many most-similar pairs to show")
    _json_arg(p)
    p.set_defaults(func=cmd_novelty)

    p = _sub(subs, "blimp", "BLiMP minimal pairs, zero-shot (ties count as wrong)",
             "nslm eval blimp --model runs/tf1m --blimp-limit 50")
    _model_arg(p)
    p.add_argument("--blimp", metavar="DIR", help="BLiMP folder (default: shared/data/blimp)")
    p.add_argument("--blimp-limit", type=positive_int, metavar="N", help="pairs per paradigm (67 paradigms; default: all 1,000)")
    _json_arg(p)
    p.set_defaults(func=cmd_blimp)

    p = _sub(subs, "cola", "CoLA: linear probe on the frozen model's features, Matthews correlation",
             "nslm eval cola --model runs/tf1m --cola-limit 2000")
    _model_arg(p)
    p.add_argument("--cola", metavar="DIR", help="CoLA folder with the raw .tsv files (default: shared/data/cola)")
    p.add_argument("--cola-limit", type=positive_int, metavar="N", help="training rows to use (default: all 8,551)")
    _json_arg(p)
    p.set_defaults(func=cmd_cola)

    p = _sub(subs, "hellaswag", "HellaSwag zero-shot accuracy, per-character normalised (chance 25%%)",
             "nslm eval hellaswag --model runs/tf1m --limit 500")
    _model_arg(p)
    p.add_argument("--hellaswag", metavar="FILE", help="HellaSwag JSONL (default: the full 10,042-item llama.cpp file in shared/data)")
    p.add_argument("--limit", type=positive_int, metavar="N", help="first N items only")
    _json_arg(p)
    p.set_defaults(func=cmd_hellaswag)

    p = _sub(subs, "judge", "grade generated stories with an OpenAI-compatible LLM (the TinyStories paper's rubric)",
             "NSLM_JUDGE_API_KEY=sk-... nslm eval judge --stories stories.jsonl --judge-url https://api.openai.com/v1")
    p.add_argument("--stories", required=True, help="JSONL from `nslm eval generate`")
    _judge_args(p)
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
                   help="small slices: 40k validation tokens, 12 prompts, 1,000 stories embedded for novelty, "
                        "12 BLiMP pairs per paradigm, 1,000 CoLA rows, 200 HellaSwag items")
    p.add_argument("--skip", action="append", default=[], choices=["likelihood", "generate", "novelty", "blimp",
                   "cola", "hellaswag", "judge"], help="leave out a step (repeatable)")
    p.add_argument("--val-max-tokens", type=positive_int, metavar="N", help="validation tokens for likelihood")
    p.add_argument("--prompt-limit", type=positive_int, metavar="N", help="use the first N prompts only")
    p.add_argument("--index-limit", type=positive_int, metavar="N", help="training stories in the novelty index")
    p.add_argument("--index-dir", metavar="DIR", help="novelty index folder (default: <data>/novelty-index)")
    p.add_argument("--blimp", metavar="DIR", help="BLiMP folder")
    p.add_argument("--blimp-limit", type=positive_int, metavar="N", help="pairs per paradigm")
    p.add_argument("--cola", metavar="DIR", help="CoLA folder")
    p.add_argument("--cola-limit", type=positive_int, metavar="N", help="CoLA training rows")
    p.add_argument("--hellaswag", metavar="FILE", help="HellaSwag JSONL file")
    p.add_argument("--hellaswag-limit", type=positive_int, metavar="N", help="HellaSwag items")
    _gen_args(p, with_limit=False)
    _judge_args(p, required=False)
    p.set_defaults(func=cmd_all)


def _gen_args(p, with_limit=True):
    p.add_argument("--prompts", help="prompt file: YAML/JSON list or one prompt per line "
                                     "(default: the TinyStories paper's evaluation prompts)")
    if with_limit:
        p.add_argument("--prompt-limit", type=positive_int, metavar="N", help="use the first N prompts only")
    p.add_argument("--seed", type=int, default=1234, help="story i uses seed + i")
    p.add_argument("--max-new-tokens", type=positive_int, default=None, help="longest completion in tokens (default 300; 200 with --quick)")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature")


def _judge_args(p, required=True):
    p.add_argument("--judge-url", required=required, help="OpenAI-compatible endpoint, e.g. https://api.openai.com/v1")
    p.add_argument("--judge-model", default="gpt-4o-mini", help="grader model name")
    p.add_argument("--judge-key-env", default="NSLM_JUDGE_API_KEY", help="environment variable holding the API key")
    p.add_argument("--judge-timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--judge-retries", type=int, default=3, help="retries per story (with backoff) before it is recorded missing")


# ---------------------------------------------------------------- commands
def _emit(result: dict, args, lines: list[str]) -> int:
    from nslm.eval.report import _jsonable
    from nslm.atomic import atomic_write_json

    print("\n".join(lines))
    if getattr(args, "json", None):
        atomic_write_json(args.json, _jsonable(result))
        print(f"wrote {args.json}")
    return 0


def _load(args):
    from nslm.eval.report import load_story_model

    return load_story_model(args.model)


def _default(path, *parts, flag):
    from nslm.eval.report import shared_path

    found = path or shared_path(*parts)
    if not found:
        raise NslmError(f"the data for this measure was not found; give it with {flag}.")
    return found


def cmd_likelihood(args) -> int:
    from nslm.eval.likelihood import evaluate_likelihood
    from nslm.eval.report import _model_data_dir

    model = _load(args)
    data = args.data or _model_data_dir(model, None)
    if not data:
        raise NslmError("no data folder given and the run's own is gone; give one with --data.")
    r = evaluate_likelihood(model, data, args.max_tokens, args.stride)
    lines = [f"model {args.model} on {data} ({r['scope']}: {r['tokens']:,} tokens, {r['bytes']:,} bytes)",
             f"  validation loss  {r['loss']:.4f} nats/token",
             f"  perplexity       {r['perplexity']:.3f}",
             f"  bits per byte    {r['bits_per_byte']:.4f}"]
    if r.get("unk"):
        lines.append(f"  <unk> targets    {r['unk']['tokens']:,} ({r['unk']['rate']:.2%}); loss over known tokens "
                     f"{r['unk']['loss_known_tokens']:.4f} ({r['unk']['how_counted']})")
    return _emit(r, args, lines)


def cmd_generate(args) -> int:
    from nslm.eval import genset

    model = _load(args)
    prompts = genset.load_prompts(args.prompts)[: args.prompt_limit or None]
    records = genset.generate_set(model, prompts, seed=args.seed, max_tokens=args.max_new_tokens or 300,
                                  temperature=args.temperature)
    genset.save_jsonl(records, args.out)
    ended = sum(r["ended"] for r in records)
    print(f"wrote {len(records)} stories to {args.out} ({ended} ended by themselves)")
    return 0


def cmd_novelty(args) -> int:
    from nslm.eval import genset, novelty

    index = novelty.NoveltyIndex.load_or_build(args.data, args.index_limit, args.index_dir)
    lines = [f"novelty index: {len(index):,} training stories in {index.folder}"]
    if not args.stories:
        return _emit(index.meta, args, lines)
    r = novelty.novelty_report(index, genset.load_jsonl(args.stories), top=args.top)
    lines += [f"  stories                        {r['stories']}",
              f"  mean cosine to nearest story   {r['mean_max_cosine']:.3f} (median {r['median_max_cosine']:.3f})",
              f"  4-grams seen in training       {r['ngram4_overlap']:.1%}",
              f"  5-grams seen in training       {r['ngram5_overlap']:.1%}",
              f"  longest common substring       mean {r['mean_lcs_chars']:.0f} chars, max {r['max_lcs_chars']}"]
    for item in r["most_similar"]:
        lines += ["", f"cosine {item['cosine']:.3f}, 4-gram overlap {item['ngram4_overlap']:.0%}:",
                  f"  generated: {item['text'][:300]}", f"  training:  {item['nearest_story'][:300]}"]
    return _emit(r, args, lines)


def cmd_blimp(args) -> int:
    from nslm.eval.grammar import evaluate_blimp

    r = evaluate_blimp(_load(args), _default(args.blimp, "blimp", flag="--blimp"), args.blimp_limit)
    lines = [f"BLiMP accuracy {r['accuracy']:.1%} on {r['pairs']:,} pairs (chance 50%, {r['ties']} ties counted wrong)"]
    lines += [f"  {k:<40} {v:.1%}" for k, v in r["by_phenomenon"].items()]
    return _emit(r, args, lines)


def cmd_cola(args) -> int:
    from nslm.eval.grammar import evaluate_cola

    r = evaluate_cola(_load(args), _default(args.cola, "cola", flag="--cola"), args.cola_limit)
    lines = [f"CoLA ({r['head']}, {r['train_rows']:,} training rows)"]
    for name in ("in_domain_dev", "out_of_domain_dev"):
        if name in r:
            d = r[name]
            lines.append(f"  {name:<18} MCC {d['mcc']:.3f}  accuracy {d['accuracy']:.1%} (majority class {d['majority_accuracy']:.1%})")
    return _emit(r, args, lines)


def cmd_hellaswag(args) -> int:
    from nslm.eval.hellaswag import DEFAULT_FILE, evaluate_hellaswag

    r = evaluate_hellaswag(_load(args), _default(args.hellaswag, "hellaswag", DEFAULT_FILE, flag="--hellaswag"), args.limit)
    lines = [f"HellaSwag accuracy {r['accuracy']:.1%} (chance 25%) on {r['items']:,} items, "
             f"unnormalised {r['accuracy_unnormalised']:.1%}",
             f"  normalisation: {r['normalisation']}", f"  data: {r['differs_from_original']}"]
    return _emit(r, args, lines)


def cmd_judge(args) -> int:
    from nslm.eval import genset, judge

    grader = judge.judge_from_args(args.judge_url, args.judge_model, args.judge_key_env, args.judge_timeout,
                                   args.judge_retries)
    r = judge.grade_stories(grader, genset.load_jsonl(args.stories))
    lines = [f"graded {r['graded']} of {r['stories']} stories with {r['judge_model']} ({r['missing']} missing)"]
    lines += [f"  {k:<12} {v:.2f}/10" if v is not None else f"  {k:<12} –" for k, v in r["means"].items()]
    if r["age_groups"]:
        lines.append("  age groups   " + ", ".join(f"{k}: {v}" for k, v in sorted(r["age_groups"].items())))
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
        lines = [f"ratings in {store.path}", f"  {'model':<30} {'ratings':>7} {'raters':>6} {'grammar':>8} {'creativity':>10} {'consistency':>11}"]
        lines += [f"  {m:<30} {s['ratings']:>7} {s['raters']:>6} {s['grammar']:>8.2f} {s['creativity']:>10.2f} {s['consistency']:>11.2f}"
                  for m, s in summary.items()]
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
    from nslm.eval.report import STEPS, EvalOptions, fmt, run_all, SUMMARY

    opts = EvalOptions(
        seed=args.seed, steps=tuple(s for s in STEPS if s not in args.skip), val_max_tokens=args.val_max_tokens,
        prompts=args.prompts, prompt_limit=args.prompt_limit, temperature=args.temperature,
        novelty_limit=args.index_limit, index_dir=args.index_dir, blimp=args.blimp, blimp_limit=args.blimp_limit,
        cola=args.cola, cola_limit=args.cola_limit, hellaswag=args.hellaswag, hellaswag_limit=args.hellaswag_limit,
        judge_url=args.judge_url, judge_model=args.judge_model, judge_key_env=args.judge_key_env,
        judge_timeout=args.judge_timeout, judge_retries=args.judge_retries)
    if args.max_new_tokens:
        opts.max_new_tokens = args.max_new_tokens
    if args.quick:
        opts.apply_quick()
    results = run_all(args.model, args.data, args.out, opts)
    names = list(results["models"])
    print(f"{'':<48}" + "".join(f"{n[:16]:>18}" for n in names))
    for key, label, pattern in SUMMARY:
        values = [results["models"][n]["summary"].get(key) for n in names]
        if all(v is None for v in values):
            continue
        print(f"{label[:48]:<48}" + "".join(f"{fmt(v, pattern):>18}" for v in values))
    for n in names:
        for step, why in results["models"][n]["skipped"].items():
            print(f"{n}: {step} skipped: {why}")
    print(f"report: {Path(args.out) / 'report.md'} and report.html ({results['seconds']:.0f} s)")
    return 0
