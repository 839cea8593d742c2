"""`nslm eval all`: every measure for several models, and one report folder comparing them side by side.

The folder holds `results.json` (every figure, with each model's config, the data, seed and versions),
`report.md` and `report.html` (tables and plots), the PNG plots, and each model's generated stories.
A step whose data is missing is skipped with a message; the other steps still run. This module runs
the steps of `nslm.eval.steps.STEPS`; `render` turns the results into the report, `plots` draws.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from nslm.atomic import atomic_write_json, atomic_write_text
from nslm.errors import NslmError
from nslm.interop.foreign import foreign_name, is_foreign
from nslm.eval import judge, plots, render
from nslm.eval.human import RatingStore, default_db_path
from nslm.eval.steps import STEP_NAMES, STEPS, StepContext, all_options, standard_errors, summarise
import nslm
from nslm.generate.api import load, resolve


@dataclass
class EvalOptions:
    """Settings of one evaluation run; one field per option of `nslm.eval.steps.STEPS` plus seed, steps, quick.

    A field left None takes its option's default, or its `--quick` value when `quick` is set.
    """

    seed: int = 1234
    steps: tuple[str, ...] = STEP_NAMES
    quick: bool = False
    val_max_tokens: int | None = None
    stride: int | None = None
    raw_valid: str | None = None
    prompts: str | None = None
    prompt_limit: int | None = None
    max_new_tokens: int | None = None
    temperature: float | None = None
    novelty_limit: int | None = None
    index_dir: str | None = None
    blimp: str | None = None
    blimp_limit: int | None = None
    cola: str | None = None
    cola_limit: int | None = None
    hellaswag: str | None = None
    hellaswag_limit: int | None = None
    judge_url: str | None = None
    judge_model: str | None = None
    judge_key_env: str | None = None
    judge_timeout: float | None = None
    judge_retries: int | None = None

    def apply_quick(self) -> "EvalOptions":
        """Use the small `--quick` slices (a few minutes on a 2-core CPU) for limits the user did not set."""
        self.quick = True
        return self.fill_defaults()

    def fill_defaults(self) -> "EvalOptions":
        """Give every unset field its option's default (or `--quick` value)."""
        for opt in all_options():
            if getattr(self, opt.field) is None:
                setattr(self, opt.field, opt.quick if self.quick and opt.quick is not None else opt.default)
        return self


def load_story_model(path: str):
    """`nslm.load(path)`, with a missing folder reported as one sentence."""
    if not Path(path).exists() and ("/" in str(path) or os.sep in str(path)) and not is_foreign(path):
        raise NslmError(f"model folder {path} does not exist; give a run folder made by `nslm train`.")
    try:
        return load(path)
    except FileNotFoundError as exc:
        raise NslmError(f"model {path} could not be loaded ({exc.filename or exc}); give a run folder made by `nslm train`.") from exc


def run_folder(run: str) -> Path:
    """The folder of a run path or shipped model name (where its metrics.jsonl lives)."""
    try:
        return Path(resolve(run))
    except Exception:
        return Path(run)


def versions() -> dict:
    """Versions of the software that produced the figures."""
    out = {"nslm": nslm.__version__, "python": sys.version.split()[0], "torch": torch.__version__,
           "numpy": np.__version__, "platform": platform.platform()}
    for name in ("sentence_transformers", "openai", "tokenizers"):
        try:
            out[name] = __import__(name).__version__
        except Exception:
            pass
    return out


def param_count(story_model) -> dict:
    model = story_model.model
    if hasattr(model, "param_counts"):
        return dict(model.param_counts())
    return {"total": int(sum(p.numel() for p in model.parameters()))}


def _note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_step(step, ctx: StepContext, skipped: dict) -> dict | None:
    """One step's result, or None with the reason in `skipped` (a broken measure must not lose the others)."""
    started = time.time()
    _note(f"[{ctx.name}] {step.name} ...")
    try:
        value = step.run(ctx)
    except NslmError as exc:
        skipped[step.name] = str(exc)
        _note(f"[{ctx.name}] {step.name} skipped: {exc}")
        return None
    except Exception as exc:
        skipped[step.name] = f"failed: {type(exc).__name__}: {exc}"
        _note(f"[{ctx.name}] {step.name} failed: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")
        return None
    value["seconds"] = round(time.time() - started, 1)
    _note(f"[{ctx.name}] {step.name} done in {time.time() - started:.1f}s")
    return value


def evaluate_model(run: str, name: str, data_dir: str | None, opts: EvalOptions, out: Path) -> dict:
    """All requested measures of one model; each step's failure is recorded and the others still run."""
    story_model = load_story_model(run)
    result: dict = {"name": name, "run": str(run), "folder": str(run_folder(run)), "config": story_model.config,
                    "params": param_count(story_model), "skipped": {},
                    "tokenizer": f"{story_model.tokenizer.kind} {story_model.tokenizer.vocab_size:,}"}
    ctx = StepContext(story_model, name, data_dir, opts, out)
    for step in STEPS:
        result[step.section] = run_step(step, ctx, result["skipped"]) if step.name in opts.steps else None
    result["summary"] = summarise(result)
    result["standard_errors"] = standard_errors(result)
    return result


def run_all(models: list[str], data_dir: str | None, out: str | Path, opts: EvalOptions) -> dict:
    """Evaluate each model, then write results.json, report.md, report.html and the plots into `out`."""
    if not models:
        raise NslmError("give at least one model with --model RUN.")
    for run in models:
        if not Path(run).exists() and ("/" in run or os.sep in run) and not is_foreign(run):
            raise NslmError(f"model folder {run} does not exist; give a run folder made by `nslm train`.")
    if data_dir and not Path(data_dir).is_dir():
        raise NslmError(f"data folder {data_dir} does not exist; make one with `nslm data prepare`.")
    unknown = sorted(set(opts.steps) - set(STEP_NAMES))
    if unknown:
        raise NslmError(f"unknown step {unknown[0]!r}; the steps are {', '.join(STEP_NAMES)}.")
    opts.fill_defaults()
    check_runnable(opts)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    names = _unique_names(models)
    results = {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"), "data": str(data_dir) if data_dir else None,
        "seed": opts.seed, "quick": opts.quick, "options": asdict(opts), "versions": versions(), "models": {},
    }
    for run, name in zip(models, names):
        results["models"][name] = evaluate_model(run, name, data_dir, opts, out)
    human = _human_summary(names)
    if human:
        results["human"] = human
    results["seconds"] = round(time.time() - started, 1)
    write_report(results, out)
    return results


def check_runnable(opts: EvalOptions) -> None:
    """NslmError, before the report folder is made, when no step would run or the grader's settings are bad."""
    if not opts.steps:
        raise NslmError(f"every step is skipped, so there is nothing to report; leave at least one of "
                        f"{', '.join(STEP_NAMES)} out of --skip.")
    if "judge" in opts.steps:
        judge.check_settings(opts.judge_url, opts.judge_timeout, opts.judge_retries, need_url=False)
    # novelty and judge measure the generated stories; judge also needs a grader
    idle = {"novelty"} if "generate" not in opts.steps else set()
    if "generate" not in opts.steps or not opts.judge_url:
        idle.add("judge")
    if set(opts.steps) <= idle:
        why = "the generate step is skipped" if "generate" not in opts.steps else "no grader is given (--judge-url)"
        raise NslmError(f"nothing would be measured: {' and '.join(s for s in STEP_NAMES if s in opts.steps)} "
                        f"cannot run because {why}; run generate too, or leave another step out of --skip.")


def _unique_names(models: list[str]) -> list[str]:
    names = []
    for run in models:
        base = foreign_name(run) if is_foreign(run) else (Path(run).name or str(run))
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def _human_summary(names: list[str]) -> dict | None:
    if not default_db_path().is_file():
        return None
    try:
        summary = RatingStore().summary()
    except NslmError:
        return None
    return {k: v for k, v in summary.items() if k in names or Path(k).name in names} or None


def write_report(results: dict, out: str | Path) -> None:
    """results.json, the plots, report.md and report.html in `out`."""
    out = Path(out)
    drawn = plots.make_plots(results, out)
    results["plots"] = [f for f, _ in drawn]
    atomic_write_json(out / "results.json", jsonable(results))
    document = render.build_document(results, drawn)
    atomic_write_text(out / "report.md", render.to_markdown(document))
    atomic_write_text(out / "report.html", render.to_html(document))


def jsonable(obj):
    """`obj` with numpy numbers, paths and non-finite floats turned into what JSON holds."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj
