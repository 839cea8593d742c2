"""The table of evaluation steps that `nslm eval all` runs: one row per measure.

Each `Step` names its function, the result section it fills, the headline figures it contributes to the
summary (with their standard errors) and its command-line options. The CLI's `--skip` choices and
options, `EvalOptions.apply_quick`, the summary and the report's table are all derived from `STEPS`,
so a new measure is one new row here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from nslm.data.tokens import DataFolder
from nslm.errors import NslmError
from nslm.eval import genset, grammar, hellaswag, judge, likelihood, novelty
from nslm.eval.datasets import DATASETS, find_data
from nslm.eval.sampling import binomial_se


@dataclass(frozen=True)
class Option:
    """One `nslm eval all` option: its flag, the `EvalOptions` field it sets and its `--quick` value."""

    flag: str
    field: str
    help: str
    type: type = str
    metavar: str | None = None
    default: object = None
    quick: object = None  # used under --quick when the user gave none


@dataclass(frozen=True)
class Figure:
    """A headline figure: its summary key, label and format, and where it (and its standard error) sit in the result."""

    key: str
    label: str
    pattern: str
    path: tuple[str, ...]
    se_path: tuple[str, ...] | None = None
    optional: bool = False  # a row only when some model has it (it needs an option or a service)


@dataclass
class StepContext:
    """What a step sees: the loaded model, where to write, the options, and the stories generated so far."""

    story_model: object
    name: str
    data_dir: str | None
    opts: object  # EvalOptions
    out: Path
    stories: list[dict] | None = None


@dataclass(frozen=True)
class Step:
    """One measure: `--skip` name, function, section of a model's results it fills, figures and options."""

    name: str
    run: Callable[[StepContext], dict]
    section: str
    figures: tuple[Figure, ...] = ()
    options: tuple[Option, ...] = ()
    dataset: str | None = None  # the public set it reads by default (a key of DATASETS), to say when it is missing


def model_data_dir(story_model, data_dir: str | None) -> str | None:
    """The data folder to evaluate on: the one given if its tokenizer matches, else the model's own."""
    own = (story_model.config.get("data") or {}).get("path")
    ours = story_model.config.get("tokenizer_sha256")
    for candidate in (data_dir, own):
        if candidate and Path(candidate, "meta.json").is_file() and DataFolder(candidate).matches(ours):
            return candidate
    return None


def _own_data(ctx: StepContext) -> str:
    found = model_data_dir(ctx.story_model, ctx.data_dir)
    if found is None:
        raise NslmError("no data folder with this model's tokenizer (give --data, or keep the one in its config.json).")
    return found


def _need_stories(ctx: StepContext) -> list[dict]:
    if not ctx.stories:
        raise NslmError("no generated stories (the generate step did not run).")
    return ctx.stories


def run_likelihood(ctx: StepContext) -> dict:
    return likelihood.evaluate_likelihood(ctx.story_model, _own_data(ctx), ctx.opts.val_max_tokens, ctx.opts.stride,
                                          raw_valid=ctx.opts.raw_valid)


def run_generate(ctx: StepContext) -> dict:
    o = ctx.opts
    prompts = genset.load_prompts(o.prompts)[: o.prompt_limit or None]
    ctx.stories = genset.generate_set(ctx.story_model, prompts, seed=o.seed, max_tokens=o.max_new_tokens,
                                      temperature=o.temperature)
    path = ctx.out / f"stories-{ctx.name}.jsonl"
    genset.save_jsonl(ctx.stories, path)
    ended = float(np.mean([s["ended"] for s in ctx.stories]))
    return {"file": path.name, "stories": len(ctx.stories), "seed": o.seed, "temperature": o.temperature,
            "max_tokens": o.max_new_tokens, "ended_rate": ended, "ended_rate_se": binomial_se(ended, len(ctx.stories)),
            "mean_tokens": float(np.mean([s["tokens"] for s in ctx.stories])),
            "prompts_file": str(o.prompts or genset.default_prompts_path()), "prompt_set": genset.prompt_set(o.prompts)}


def run_novelty(ctx: StepContext) -> dict:
    stories = _need_stories(ctx)
    index = novelty.NoveltyIndex.load_or_build(ctx.data_dir or _own_data(ctx), ctx.opts.novelty_limit,
                                               ctx.opts.index_dir)
    return novelty.novelty_report(index, stories)


def run_blimp(ctx: StepContext) -> dict:
    return grammar.evaluate_blimp(ctx.story_model, find_data("blimp", ctx.opts.blimp), ctx.opts.blimp_limit,
                                  seed=ctx.opts.seed)


def run_cola(ctx: StepContext) -> dict:
    return grammar.evaluate_cola(ctx.story_model, find_data("cola", ctx.opts.cola), ctx.opts.cola_limit,
                                 seed=ctx.opts.seed)


def run_hellaswag(ctx: StepContext) -> dict:
    return hellaswag.evaluate_hellaswag(ctx.story_model, find_data("hellaswag", ctx.opts.hellaswag),
                                        ctx.opts.hellaswag_limit, seed=ctx.opts.seed)


def run_judge(ctx: StepContext) -> dict:
    o = ctx.opts
    if not o.judge_url:
        raise NslmError("no grader given (--judge-url).")
    stories = _need_stories(ctx)
    grader = judge.judge_from_args(o.judge_url, o.judge_model, o.judge_key_env, o.judge_timeout, o.judge_retries)
    return judge.grade_stories(grader, stories)


_SHARED = "under $NSLM_SHARED_DATA or shared/data"
DEFAULT_HELLASWAG = DATASETS["hellaswag"].shared[-1]

PARAMS = Figure("params", "parameters", "{:,.0f}", ("params", "total"))

STEPS: tuple[Step, ...] = (
    Step("likelihood", run_likelihood, "likelihood", (
        Figure("bits_per_byte", "validation bits per byte (lower is better)", "{:.4f}", ("bits_per_byte",),
               ("bits_per_byte_se",)),
        Figure("perplexity", "validation perplexity (per token)", "{:.3f}", ("perplexity",)),
        Figure("val_loss", "validation loss (nats/token)", "{:.4f}", ("loss",)),
        Figure("bits_per_byte_raw", "bits per byte on the raw published validation text", "{:.4f}",
               ("raw_text", "bits_per_byte"), ("raw_text", "bits_per_byte_se"), optional=True),
    ), (
        Option("--val-max-tokens", "val_max_tokens", "validation tokens for likelihood (whole stories)", int, "N",
               quick=40_000),
        Option("--stride", "stride", "window stride in tokens (default: half the context)", int, "N"),
        Option("--raw-valid", "raw_valid", "the published validation file the data folder was cleaned from "
               "(e.g. TinyStories-valid.txt): also report bits per byte on its uncleaned stories", str, "FILE"),
    )),
    Step("generate", run_generate, "generation", (
        Figure("generation.ended_rate", "stories that end by themselves", "{:.0%}", ("ended_rate",),
               ("ended_rate_se",)),
    ), (
        Option("--prompts", "prompts", "prompt file: YAML/JSON list or one prompt per line "
               "(default: the TinyStories paper's evaluation prompts, else nslm's own story openings)", str, "FILE"),
        Option("--prompt-limit", "prompt_limit", "use the first N prompts only", int, "N", quick=12),
        Option("--max-new-tokens", "max_new_tokens", "longest completion in tokens", int, "N", default=300, quick=200),
        Option("--temperature", "temperature", "sampling temperature", float, "T", default=0.8),
    ), dataset="prompts"),
    Step("novelty", run_novelty, "novelty", (
        Figure("novelty.mean_max_cosine", "novelty: mean cosine to nearest training story", "{:.3f}",
               ("mean_max_cosine",), ("mean_max_cosine_se",)),
        Figure("novelty.ngram4_overlap", "novelty: 4-grams seen in training", "{:.1%}", ("ngram4_overlap",),
               ("ngram4_overlap_se",)),
        Figure("novelty.ngram5_overlap", "novelty: 5-grams seen in training", "{:.1%}", ("ngram5_overlap",),
               ("ngram5_overlap_se",)),
    ), (
        Option("--index-limit", "novelty_limit", "training stories embedded in the novelty index", int, "N",
               quick=1000),
        Option("--index-dir", "index_dir", "novelty index folder (default: <data>/novelty-index)", str, "DIR"),
    )),
    Step("blimp", run_blimp, "blimp", (
        Figure("blimp.accuracy", "BLiMP accuracy (chance 50%)", "{:.1%}", ("accuracy",), ("accuracy_se",)),
    ), (
        Option("--blimp", "blimp", f"BLiMP folder (default: blimp/ {_SHARED})", str, "DIR"),
        Option("--blimp-limit", "blimp_limit", "pairs per paradigm, a seeded random sample", int, "N", quick=12),
    ), dataset="blimp"),
    Step("cola", run_cola, "cola", (
        Figure("cola.mcc", "CoLA MCC, in-domain dev", "{:.3f}", ("mcc",), ("mcc_se",)),
        Figure("cola.mcc_out_of_domain", "CoLA MCC, out-of-domain dev", "{:.3f}", ("out_of_domain_dev", "mcc"),
               ("out_of_domain_dev", "mcc_se")),
    ), (
        Option("--cola", "cola", f"CoLA folder with the raw .tsv files (default: cola/ {_SHARED})", str, "DIR"),
        Option("--cola-limit", "cola_limit", "CoLA training rows, a seeded random sample stratified by source",
               int, "N", quick=1000),
    ), dataset="cola"),
    Step("hellaswag", run_hellaswag, "hellaswag", (
        Figure("hellaswag.accuracy", "HellaSwag accuracy, per-char norm. (chance 25%)", "{:.1%}", ("accuracy",),
               ("accuracy_se",)),
    ), (
        Option("--hellaswag", "hellaswag", "HellaSwag JSONL file (default: the full 10,042-item llama.cpp file, "
               f"hellaswag/{DEFAULT_HELLASWAG} {_SHARED})", str, "FILE"),
        Option("--hellaswag-limit", "hellaswag_limit", "HellaSwag items, a seeded random sample stratified by source",
               int, "N", quick=200),
    ), dataset="hellaswag"),
    Step("judge", run_judge, "judge", tuple(
        Figure(f"judge.{k}", f"LLM grade: {k} /10", "{:.2f}", ("means", k), optional=True)
        for k in ("grammar", "creativity", "consistency", "plot")
    ), (
        Option("--judge-url", "judge_url", "OpenAI-compatible endpoint, e.g. https://api.openai.com/v1", str, "URL"),
        Option("--judge-model", "judge_model", "grader model name", str, "NAME", default="gpt-4o-mini"),
        Option("--judge-key-env", "judge_key_env", "environment variable holding the API key", str,
               "VAR", default=judge.KEY_ENV),
        Option("--judge-timeout", "judge_timeout", "seconds per request", float, "SECONDS", default=60.0),
        Option("--judge-retries", "judge_retries", "retries per story (with backoff) before it is recorded missing",
               int, "N", default=3),
    )),
)

STEP_NAMES = tuple(s.name for s in STEPS)
FIGURES: tuple[Figure, ...] = (PARAMS, *(f for s in STEPS for f in s.figures))


def all_options() -> list[Option]:
    return [o for s in STEPS for o in s.options]


def _get(node, path: tuple[str, ...] | None):
    if path is None:
        return None
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def summarise(result: dict) -> dict:
    """The headline figures of one model under flat dotted names (`blimp.accuracy`, ...)."""
    out = {PARAMS.key: _get(result, PARAMS.path)}
    for step in STEPS:
        for fig in step.figures:
            out[fig.key] = _get(result.get(step.section), fig.path)
    return out


def standard_errors(result: dict) -> dict:
    """The standard error of each headline figure that has one (same keys as `summarise`)."""
    out = {}
    for step in STEPS:
        for fig in step.figures:
            se = _get(result.get(step.section), fig.se_path)
            if se is not None:
                out[fig.key] = se
    return out
