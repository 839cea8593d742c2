"""`nslm eval all`: every measure for several models, and one report folder comparing them side by side.

The folder holds `results.json` (every figure, with each model's config, the data, seed and versions),
`report.md` and `report.html` (tables and plots), the PNG plots, and each model's generated stories.
A step whose data is missing is skipped with a message; the other steps still run.
"""

from __future__ import annotations

import html
import io
import math
import os
import platform
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nslm.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from nslm.errors import NslmError
from nslm.train.metrics import read_metrics

STEPS = ("likelihood", "generate", "novelty", "blimp", "cola", "hellaswag", "judge")

# The figures every model gets in the summary table: (key, label, format).
SUMMARY = (
    ("params", "parameters", "{:,.0f}"),
    ("bits_per_byte", "validation bits per byte (lower is better)", "{:.4f}"),
    ("perplexity", "validation perplexity (per token)", "{:.3f}"),
    ("val_loss", "validation loss (nats/token)", "{:.4f}"),
    ("generation.ended_rate", "stories that end by themselves", "{:.0%}"),
    ("novelty.mean_max_cosine", "novelty: mean cosine to nearest training story", "{:.3f}"),
    ("novelty.ngram4_overlap", "novelty: 4-grams seen in training", "{:.1%}"),
    ("novelty.ngram5_overlap", "novelty: 5-grams seen in training", "{:.1%}"),
    ("blimp.accuracy", "BLiMP accuracy (chance 50%)", "{:.1%}"),
    ("cola.mcc", "CoLA MCC, in-domain dev", "{:.3f}"),
    ("cola.mcc_out_of_domain", "CoLA MCC, out-of-domain dev", "{:.3f}"),
    ("hellaswag.accuracy", "HellaSwag accuracy, per-char norm. (chance 25%)", "{:.1%}"),
    ("judge.grammar", "LLM grade: grammar /10", "{:.2f}"),
    ("judge.creativity", "LLM grade: creativity /10", "{:.2f}"),
    ("judge.consistency", "LLM grade: consistency /10", "{:.2f}"),
    ("judge.plot", "LLM grade: plot /10", "{:.2f}"),
)


@dataclass
class EvalOptions:
    """Settings of one evaluation run; `quick()` gives the small limits of `--quick`."""

    seed: int = 1234
    steps: tuple[str, ...] = STEPS
    val_max_tokens: int | None = None
    stride: int | None = None
    prompts: str | None = None
    prompt_limit: int | None = None
    max_new_tokens: int = 300
    temperature: float = 0.8
    novelty_limit: int | None = None
    index_dir: str | None = None
    blimp: str | None = None
    blimp_limit: int | None = None
    cola: str | None = None
    cola_limit: int | None = None
    hellaswag: str | None = None
    hellaswag_limit: int | None = None
    judge_url: str | None = None
    judge_model: str = "gpt-4o-mini"
    judge_key_env: str = "NSLM_JUDGE_API_KEY"
    judge_timeout: float = 60.0
    judge_retries: int = 3
    quick: bool = False

    def apply_quick(self) -> "EvalOptions":
        """Fill limits the user did not set with the `--quick` ones (a few minutes on a 2-core CPU)."""
        self.quick = True
        defaults = {"val_max_tokens": 40_000, "prompt_limit": 12, "max_new_tokens": 200, "novelty_limit": 1000,
                    "blimp_limit": 12, "cola_limit": 1000, "hellaswag_limit": 200}
        for key, value in defaults.items():
            if getattr(self, key) is None or (key == "max_new_tokens" and self.max_new_tokens == 300):
                setattr(self, key, value)
        return self


def shared_path(*parts: str) -> str | None:
    """A path inside the shared data folder, or None when this machine has none."""
    from nslm.sample_data import shared_data_dir

    root = shared_data_dir()
    path = root.joinpath(*parts) if root else None
    return str(path) if path is not None and path.exists() else None


def load_story_model(path: str):
    """`nslm.load(path)`, with a missing folder reported as one sentence."""
    if not Path(path).exists() and ("/" in str(path) or os.sep in str(path)):
        raise NslmError(f"model folder {path} does not exist; give a run folder made by `nslm train`.")
    import nslm

    try:
        return nslm.load(path)
    except FileNotFoundError as exc:
        raise NslmError(f"model {path} could not be loaded ({exc.filename or exc}); give a run folder made by `nslm train`.") from exc


def run_folder(run: str) -> Path:
    """The folder of a run path or shipped model name (where its metrics.jsonl lives)."""
    try:
        from nslm.generate.api import resolve

        return Path(resolve(run))
    except Exception:
        return Path(run)


def versions() -> dict:
    """Versions of the software that produced the figures."""
    import torch

    import nslm

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


def _model_data_dir(story_model, data_dir: str | None) -> str | None:
    """The data folder to evaluate on: the one given if its tokenizer matches, else the model's own."""
    from nslm.data.tokens import DataFolder

    own = (story_model.config.get("data") or {}).get("path")
    ours = story_model.config.get("tokenizer_sha256")
    for candidate in (data_dir, own):
        if candidate and Path(candidate, "meta.json").is_file() and DataFolder(candidate).matches(ours):
            return candidate
    return None


def evaluate_model(run: str, name: str, data_dir: str | None, opts: EvalOptions, out: Path) -> dict:
    """All requested measures of one model; each step's failure is recorded and the others still run."""
    from nslm.eval import genset, grammar, hellaswag, likelihood, novelty

    story_model = load_story_model(run)
    result: dict = {"name": name, "run": str(run), "folder": str(run_folder(run)), "config": story_model.config,
                    "params": param_count(story_model), "skipped": {}}
    stories: list[dict] | None = None

    def step(label: str, fn):
        if label not in opts.steps:
            return None
        started = time.time()
        _note(f"[{name}] {label} ...")
        try:
            value = fn()
        except NslmError as exc:
            result["skipped"][label] = str(exc)
            _note(f"[{name}] {label} skipped: {exc}")
            return None
        except Exception as exc:  # one broken measure must not lose the others' figures
            result["skipped"][label] = f"failed: {type(exc).__name__}: {exc}"
            _note(f"[{name}] {label} failed: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")
            return None
        if isinstance(value, dict):
            value["seconds"] = round(time.time() - started, 1)
        _note(f"[{name}] {label} done in {time.time() - started:.1f}s")
        return value

    def need(path, what, flag):
        if not path:
            raise NslmError(f"no {what} given and none in the shared data folder; give it with {flag}.")
        if not Path(path).exists():
            raise NslmError(f"{what} {path} does not exist; give it with {flag}.")
        return path

    def own_data():
        found = _model_data_dir(story_model, data_dir)
        if found is None:
            raise NslmError("no data folder with this model's tokenizer (give --data, or keep the one in its config.json).")
        return found

    result["likelihood"] = step("likelihood", lambda: likelihood.evaluate_likelihood(
        story_model, own_data(), opts.val_max_tokens, opts.stride))

    def generate():
        nonlocal stories
        prompts = genset.load_prompts(opts.prompts)[: opts.prompt_limit or None]
        stories = genset.generate_set(story_model, prompts, seed=opts.seed, max_tokens=opts.max_new_tokens,
                                      temperature=opts.temperature)
        path = out / f"stories-{name}.jsonl"
        genset.save_jsonl(stories, path)
        return {"file": path.name, "stories": len(stories), "seed": opts.seed, "temperature": opts.temperature,
                "max_tokens": opts.max_new_tokens, "ended_rate": float(np.mean([s["ended"] for s in stories])),
                "mean_tokens": float(np.mean([s["tokens"] for s in stories])),
                "prompts_file": str(opts.prompts or genset.default_prompts_path())}

    result["generation"] = step("generate", generate)

    def novelty_step():
        if not stories:
            raise NslmError("no generated stories (the generate step did not run).")
        base = data_dir or own_data()
        index = novelty.NoveltyIndex.load_or_build(base, opts.novelty_limit, opts.index_dir)
        return novelty.novelty_report(index, stories)

    result["novelty"] = step("novelty", novelty_step)
    result["blimp"] = step("blimp", lambda: grammar.evaluate_blimp(
        story_model, need(opts.blimp or shared_path("blimp"), "BLiMP folder", "--blimp"), opts.blimp_limit))
    result["cola"] = step("cola", lambda: grammar.evaluate_cola(
        story_model, need(opts.cola or shared_path("cola"), "CoLA folder", "--cola"), opts.cola_limit))
    result["hellaswag"] = step("hellaswag", lambda: hellaswag.evaluate_hellaswag(
        story_model, need(opts.hellaswag or shared_path("hellaswag", hellaswag.DEFAULT_FILE), "HellaSwag file",
                          "--hellaswag"), opts.hellaswag_limit))

    def judge_step():
        from nslm.eval import judge

        if not opts.judge_url:
            raise NslmError("no grader given (--judge-url).")
        if not stories:
            raise NslmError("no generated stories (the generate step did not run).")
        grader = judge.judge_from_args(opts.judge_url, opts.judge_model, opts.judge_key_env,
                                       opts.judge_timeout, opts.judge_retries)
        return judge.grade_stories(grader, stories)

    result["judge"] = step("judge", judge_step)
    result["summary"] = summarise(result)
    return result


def summarise(result: dict) -> dict:
    """The headline figures of one model under flat dotted names (`blimp.accuracy`, ...)."""
    def get(section, *keys):
        node = result.get(section)
        for key in keys:
            if not isinstance(node, dict):
                return None
            node = node.get(key)
        return node

    return {
        "params": get("params", "total"),
        "bits_per_byte": get("likelihood", "bits_per_byte"),
        "perplexity": get("likelihood", "perplexity"),
        "val_loss": get("likelihood", "loss"),
        "generation.ended_rate": get("generation", "ended_rate"),
        "novelty.mean_max_cosine": get("novelty", "mean_max_cosine"),
        "novelty.ngram4_overlap": get("novelty", "ngram4_overlap"),
        "novelty.ngram5_overlap": get("novelty", "ngram5_overlap"),
        "blimp.accuracy": get("blimp", "accuracy"),
        "cola.mcc": get("cola", "mcc"),
        "cola.mcc_out_of_domain": get("cola", "out_of_domain_dev", "mcc"),
        "hellaswag.accuracy": get("hellaswag", "accuracy"),
        **{f"judge.{k}": get("judge", "means", k) for k in ("grammar", "creativity", "consistency", "plot")},
    }


def run_all(models: list[str], data_dir: str | None, out: str | Path, opts: EvalOptions) -> dict:
    """Evaluate each model, then write results.json, report.md, report.html and the plots into `out`."""
    if not models:
        raise NslmError("give at least one model with --model RUN.")
    for run in models:
        if not Path(run).exists() and ("/" in run or os.sep in run):
            raise NslmError(f"model folder {run} does not exist; give a run folder made by `nslm train`.")
    if data_dir and not Path(data_dir).is_dir():
        raise NslmError(f"data folder {data_dir} does not exist; make one with `nslm data prepare`.")
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


def _unique_names(models: list[str]) -> list[str]:
    names = []
    for run in models:
        base = Path(run).name or str(run)
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def _human_summary(names: list[str]) -> dict | None:
    from nslm.eval.human import RatingStore, default_db_path

    if not default_db_path().is_file():
        return None
    try:
        summary = RatingStore().summary()
    except NslmError:
        return None
    return {k: v for k, v in summary.items() if k in names or Path(k).name in names} or None


# ---------------------------------------------------------------- writing
def fmt(value, pattern: str = "{:.4g}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    try:
        return pattern.format(value)
    except (ValueError, TypeError):
        return str(value)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def make_plots(results: dict, out: Path) -> list[tuple[str, str]]:
    """Write the PNG plots; returns (file name, caption) of each one drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    models = results["models"]
    drawn = []

    fig, ax = plt.subplots(figsize=(8, 4.5))
    any_curve = False
    for name, res in models.items():
        metrics = read_metrics(res.get("folder") or res["run"])
        train = [(m["tokens"], m["train_loss"]) for m in metrics if m.get("event") == "train" and m.get("train_loss") is not None]
        val = [(m["tokens"], m["val_loss"]) for m in metrics if m.get("event") == "eval" and m.get("val_loss") is not None]
        if train:
            line, = ax.plot(*zip(*train), lw=1, alpha=0.6, label=f"{name} train")
            any_curve = True
            if val:
                ax.plot(*zip(*val), "o-", color=line.get_color(), label=f"{name} validation")
        elif val:
            ax.plot(*zip(*val), "o-", label=f"{name} validation")
            any_curve = True
    if any_curve:
        ax.set_xlabel("tokens seen")
        ax.set_ylabel("loss (nats / token)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        atomic_write_bytes(out / "loss_curves.png", _png(fig))
        drawn.append(("loss_curves.png", "Training and validation loss from each run's metrics.jsonl"))
    plt.close(fig)

    points = [(res["summary"]["params"], res["summary"]["bits_per_byte"], name) for name, res in models.items()
              if res["summary"].get("params") and res["summary"].get("bits_per_byte")]
    if points:
        fig, ax = plt.subplots(figsize=(6, 4))
        for p, b, name in points:
            ax.scatter([p], [b], s=40)
            ax.annotate(name, (p, b), textcoords="offset points", xytext=(5, 5), fontsize=8)
        sizes = [p for p, _, _ in points]
        if max(sizes) > 10 * min(sizes):
            ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1e6:.2f}M"))
        ax.set_xlabel("parameters")
        ax.set_ylabel("validation bits per byte")
        ax.grid(alpha=0.3)
        atomic_write_bytes(out / "bpb_vs_params.png", _png(fig))
        plt.close(fig)
        drawn.append(("bpb_vs_params.png", "Validation bits per byte against model size"))

    with_novelty = {n: r["novelty"] for n, r in models.items() if r.get("novelty")}
    if with_novelty:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        bins = np.linspace(0, 1, 21)
        for name, nov in with_novelty.items():
            axes[0].hist(nov["cosines"], bins=bins, alpha=0.5, label=name)
            axes[1].hist([x for x in nov["ngram4_overlaps"] if x is not None], bins=bins, alpha=0.5, label=name)
        axes[0].set_xlabel("cosine similarity to the nearest training story")
        axes[1].set_xlabel("share of the story's 4-grams seen in training")
        for ax in axes:
            ax.set_ylabel("stories")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        atomic_write_bytes(out / "novelty_hist.png", _png(fig))
        plt.close(fig)
        drawn.append(("novelty_hist.png", "Novelty: distributions over the generated stories"))

    with_blimp = {n: r["blimp"]["by_phenomenon"] for n, r in models.items() if r.get("blimp")}
    if with_blimp:
        terms = sorted({t for d in with_blimp.values() for t in d})
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(terms) + 1.5))
        height = 0.8 / len(with_blimp)
        for k, (name, by) in enumerate(with_blimp.items()):
            ys = np.arange(len(terms)) + k * height
            ax.barh(ys, [by.get(t, 0) for t in terms], height=height, label=name)
        ax.axvline(0.5, color="grey", ls="--", lw=1, label="chance")
        ax.set_yticks(np.arange(len(terms)) + 0.4 - height / 2)
        ax.set_yticklabels(terms, fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_xlabel("accuracy")
        ax.legend(fontsize=8)
        atomic_write_bytes(out / "blimp_phenomena.png", _png(fig))
        plt.close(fig)
        drawn.append(("blimp_phenomena.png", "BLiMP accuracy per phenomenon"))
    return drawn


def _summary_rows(results: dict) -> list[list[str]]:
    models = results["models"]
    rows = []
    for key, label, pattern in SUMMARY:
        values = [res["summary"].get(key) for res in models.values()]
        if all(v is None for v in values) and key.startswith("judge."):
            continue
        rows.append([label] + [fmt(v, pattern) for v in values])
    return rows


def _details(results: dict) -> list[str]:
    """Plain-language lines stating what each figure was computed on."""
    lines = []
    for name, res in results["models"].items():
        lk, bl, hs, co, nv = (res.get(k) for k in ("likelihood", "blimp", "hellaswag", "cola", "novelty"))
        cfg = res["config"].get("model", {})
        parts = [f"**{name}** ({cfg.get('arch', '?')}, {fmt(res['params'].get('total'), '{:,}')} parameters, "
                 f"context {cfg.get('context_length', '?')}, tokenizer {res['config'].get('data', {}).get('tokenizer_kind', '?')}):"]
        if lk:
            unk = f"; {lk['unk']['tokens']:,} `<unk>` targets ({lk['unk']['rate']:.2%}), loss over known tokens {lk['unk']['loss_known_tokens']:.4f}" if lk.get("unk") else ""
            parts.append(f"likelihood over {lk['tokens']:,} tokens / {lk['bytes']:,} bytes ({lk['scope']}, windows of "
                         f"{lk['context_length']} with stride {lk['stride']}){unk};")
        if bl:
            parts.append(f"BLiMP {bl['pairs']:,} pairs ({bl['ties']} ties, counted wrong);")
        if co:
            parts.append(f"CoLA probe trained on {co['train_rows']:,} rows;")
        if hs:
            parts.append(f"HellaSwag {hs['items']:,} items (unnormalised {fmt(hs['accuracy_unnormalised'], '{:.1%}')});")
        if nv:
            parts.append(f"novelty: {nv['index_stories']:,} training stories embedded, n-grams of "
                         f"{nv.get('ngram_stories', nv['index_stories']):,};")
        for step, why in res.get("skipped", {}).items():
            parts.append(f"*{step} skipped: {why}*")
        lines.append(" ".join(parts))
    return lines


def write_markdown(results: dict, plots: list[tuple[str, str]]) -> str:
    names = list(results["models"])
    md = ["# Evaluation report", "",
          f"{results['created']} · data `{results['data']}` · seed {results['seed']}"
          f"{' · quick (limited slices)' if results['quick'] else ''} · {results.get('seconds', 0):.0f} s", "",
          "| measure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    md += ["| " + " | ".join(row) + " |" for row in _summary_rows(results)]
    md += ["", *[f"- {line}" for line in _details(results)], ""]
    for file, caption in plots:
        md += [f"## {caption}", "", f"![{caption}]({file})", ""]
    with_blimp = {n: r["blimp"]["by_phenomenon"] for n, r in results["models"].items() if r.get("blimp")}
    if with_blimp:
        terms = sorted({t for d in with_blimp.values() for t in d})
        md += ["## BLiMP per phenomenon", "", "| phenomenon | " + " | ".join(with_blimp) + " |",
               "|---|" + "---|" * len(with_blimp)]
        md += [f"| {t} | " + " | ".join(fmt(by.get(t), "{:.1%}") for by in with_blimp.values()) + " |" for t in terms]
        md.append("")
    for name, res in results["models"].items():
        nov = res.get("novelty")
        if not nov:
            continue
        md += [f"## Most similar to training: {name}", ""]
        for item in nov["most_similar"][:3]:
            md += [f"cosine {item['cosine']:.3f} · 4-gram overlap {fmt(item['ngram4_overlap'], '{:.0%}')} · "
                   f"longest common substring {item['lcs_chars']} chars", "",
                   "| generated | nearest training story |", "|---|---|",
                   f"| {_cell(item['text'])} | {_cell(item['nearest_story'])} |", ""]
    if results.get("human"):
        md += ["## Human ratings", "", "| model | ratings | grammar | creativity | consistency |", "|---|---|---|---|---|"]
        md += [f"| {m} | {s['ratings']} | {s['grammar']:.2f} | {s['creativity']:.2f} | {s['consistency']:.2f} |"
               for m, s in results["human"].items()]
    return "\n".join(md) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def write_html(results: dict, plots: list[tuple[str, str]]) -> str:
    esc = html.escape
    names = list(results["models"])
    head = "".join(f"<th>{esc(n)}</th>" for n in names)
    rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in _summary_rows(results))
    details = "".join(f"<li>{esc(line.replace('**', '').replace('`', '').replace('*', ''))}</li>" for line in _details(results))
    figs = "".join(f"<figure><img src='{esc(f)}' alt='{esc(c)}'><figcaption>{esc(c)}</figcaption></figure>" for f, c in plots)
    pairs = ""
    for name, res in results["models"].items():
        nov = res.get("novelty")
        if not nov:
            continue
        pairs += f"<h2>Most similar to training: {esc(name)}</h2>"
        for item in nov["most_similar"][:3]:
            pairs += (f"<p>cosine {item['cosine']:.3f} · 4-gram overlap {fmt(item['ngram4_overlap'], '{:.0%}')} · "
                      f"longest common substring {item['lcs_chars']} chars: <q>{esc(item['lcs_text'][:200])}</q></p>"
                      f"<table class='pair'><tr><th>generated</th><th>nearest training story</th></tr>"
                      f"<tr><td>{esc(item['text'])}</td><td>{esc(item['nearest_story'])}</td></tr></table>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}"
             "td:not(:first-child){text-align:right}.pair td{text-align:left;width:50%;font-size:90%}"
             "img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>nslm evaluation</title><style>{style}</style></head>"
            f"<body><h1>Evaluation report</h1><p>{esc(results['created'])} · data {esc(str(results['data']))} · "
            f"seed {results['seed']}{' · quick (limited slices)' if results['quick'] else ''}</p>"
            f"<table><tr><th>measure</th>{head}</tr>{rows}</table><ul>{details}</ul>{figs}{pairs}</body></html>\n")


def write_report(results: dict, out: str | Path) -> None:
    """results.json, the plots, report.md and report.html in `out`."""
    out = Path(out)
    plots = make_plots(results, out)
    results["plots"] = [f for f, _ in plots]
    atomic_write_json(out / "results.json", _jsonable(results))
    atomic_write_text(out / "report.md", write_markdown(results, plots))
    atomic_write_text(out / "report.html", write_html(results, plots))


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj
