"""The evaluation report as one document (`build_document`) that Markdown and HTML both render.

`build_document(results, plots)` decides what the report says: the summary table (each figure with its
standard error where it has one), what every figure was computed on, the plots, BLiMP per phenomenon,
the generated stories most similar to training, and the human ratings. `to_markdown` and `to_html`
only decide how it looks.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

from nslm.eval.steps import FIGURES


@dataclass
class Span:
    text: str
    style: str = ""  # "", "bold", "code", "italic" or "quote"


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    spans: list[Span]


@dataclass
class Bullets:
    items: list[list[Span]]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    numeric: bool = True  # right-align every column but the first


@dataclass
class Image:
    file: str
    caption: str


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)


def fmt(value, pattern: str = "{:.4g}") -> str:
    """`value` in `pattern`, or an en dash for a missing or NaN figure."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    try:
        return pattern.format(value)
    except (ValueError, TypeError):
        return str(value)


def with_se(value, se, pattern: str) -> str:
    """`51.7% ± 1.8%`: a figure and its standard error in the figure's own format."""
    return fmt(value, pattern) if se is None or value is None else f"{fmt(value, pattern)} ± {fmt(se, pattern)}"


def summary_rows(results: dict) -> list[list[str]]:
    """One row per headline figure: label, then each model's value (± standard error); optional rows (the
    grader, the raw text) only where some model has them."""
    models = results["models"].values()
    rows = []
    for fig in FIGURES:
        values = [res["summary"].get(fig.key) for res in models]
        if all(v is None for v in values) and fig.optional:
            continue
        rows.append([fig.label] + [with_se(res["summary"].get(fig.key), res.get("standard_errors", {}).get(fig.key),
                                           fig.pattern) for res in models])
    return rows


def _sample_note(section: dict | None) -> str:
    sample = (section or {}).get("sample")
    return f", {sample['method']} (seed {sample['seed']})" if sample else ""


def model_details(name: str, res: dict) -> list[Span]:
    """What each of one model's figures was computed on, in plain words."""
    lk, gen, bl, hs, co, nv = (res.get(k) for k in ("likelihood", "generation", "blimp", "hellaswag", "cola", "novelty"))
    cfg = res["config"].get("model", {})
    spans = [Span(name, "bold"), Span(f" ({cfg.get('arch', '?')}, {fmt(res['params'].get('total'), '{:,}')} parameters, "
                                      f"context {cfg.get('context_length', '?')}, tokenizer "
                                      f"{res.get('tokenizer') or res['config'].get('data', {}).get('tokenizer_kind', '?')}):")]
    parts = []
    if lk:
        unk = (f"; {lk['unk']['tokens']:,} <unk> targets ({lk['unk']['rate']:.2%}), loss over known tokens "
               f"{lk['unk']['loss_known_tokens']:.4f}") if lk.get("unk") else ""
        parts.append(f"likelihood over {lk['tokens']:,} tokens / {lk['bytes']:,} bytes ({lk['scope']}, windows of "
                     f"{lk['context_length']} with stride {lk['stride']}){unk};")
    if gen:
        prompts = gen.get("prompt_set") or f"the prompts of {gen.get('prompts_file', '?')}"
        parts.append(f"{gen['stories']:,} stories generated from {prompts};")
    if bl:
        parts.append(f"BLiMP {bl['pairs']:,} pairs ({bl['ties']} ties, counted wrong{_sample_note(bl)});")
    if co:
        parts.append(f"CoLA probe trained on {co['train_rows']:,} rows{_sample_note(co)};")
    if hs:
        parts.append(f"HellaSwag {hs['items']:,} items (unnormalised {fmt(hs['accuracy_unnormalised'], '{:.1%}')}"
                     f"{_sample_note(hs)});")
    if nv:
        parts.append(f"novelty: {nv['index_stories']:,} training stories embedded, n-grams of "
                     f"{nv.get('ngram_stories', nv['index_stories']):,};")
    spans += [Span(" " + p) for p in parts]
    for step, why in res.get("skipped", {}).items():
        spans.append(Span(f" {step} skipped: {why}", "italic"))
    return spans


def _header_line(results: dict) -> Paragraph:
    quick = " · quick (limited slices)" if results["quick"] else ""
    return Paragraph([Span(f"{results['created']} · data "), Span(str(results["data"]), "code"),
                      Span(f" · seed {results['seed']}{quick} · {results.get('seconds', 0):.0f} s")])


def _blimp_blocks(results: dict) -> list:
    with_blimp = {n: r["blimp"]["by_phenomenon"] for n, r in results["models"].items() if r.get("blimp")}
    if not with_blimp:
        return []
    terms = sorted({t for d in with_blimp.values() for t in d})
    rows = [[t] + [fmt(by.get(t), "{:.1%}") for by in with_blimp.values()] for t in terms]
    return [Heading("BLiMP per phenomenon"), Table(["phenomenon", *with_blimp], rows)]


def _similar_blocks(results: dict) -> list:
    blocks = []
    for name, res in results["models"].items():
        nov = res.get("novelty")
        if not nov:
            continue
        blocks.append(Heading(f"Most similar to training: {name}"))
        for item in nov["most_similar"][:3]:
            blocks.append(Paragraph([
                Span(f"cosine {item['cosine']:.3f} · 4-gram overlap {fmt(item['ngram4_overlap'], '{:.0%}')} · "
                     f"longest common substring {item['lcs_chars']} chars: "),
                Span(item["lcs_text"][:200], "quote")]))
            blocks.append(Table(["generated", "nearest training story"], [[item["text"], item["nearest_story"]]],
                                numeric=False))
    return blocks


def _human_blocks(results: dict) -> list:
    if not results.get("human"):
        return []
    rows = [[m, str(s["ratings"]), f"{s['grammar']:.2f}", f"{s['creativity']:.2f}", f"{s['consistency']:.2f}"]
            for m, s in results["human"].items()]
    return [Heading("Human ratings"), Table(["model", "ratings", "grammar", "creativity", "consistency"], rows)]


def build_document(results: dict, plots: list[tuple[str, str]]) -> Document:
    """Everything the report says, in order, independent of how it is rendered."""
    doc = Document("Evaluation report")
    doc.blocks += [_header_line(results), Table(["measure", *results["models"]], summary_rows(results))]
    doc.blocks.append(Paragraph([Span("± is one standard error over the items measured (binomial for accuracies, "
                                      "over stories for bits per byte and novelty, bootstrap over dev rows for CoLA).")]))
    doc.blocks.append(Bullets([model_details(n, r) for n, r in results["models"].items()]))
    for file, caption in plots:
        doc.blocks += [Heading(caption), Image(file, caption)]
    doc.blocks += _blimp_blocks(results) + _similar_blocks(results) + _human_blocks(results)
    return doc


# ---------------------------------------------------------------- Markdown
_MD = {"": "{}", "bold": "**{}**", "code": "`{}`", "italic": "*{}*", "quote": "“{}”"}


def _md_spans(spans: list[Span]) -> str:
    return "".join(_MD[s.style].format(s.text) if s.text else "" for s in spans)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def to_markdown(doc: Document) -> str:
    md = [f"# {doc.title}", ""]
    for block in doc.blocks:
        if isinstance(block, Heading):
            md += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            md += [_md_spans(block.spans), ""]
        elif isinstance(block, Bullets):
            md += [f"- {_md_spans(item)}" for item in block.items] + [""]
        elif isinstance(block, Table):
            md += ["| " + " | ".join(block.header) + " |", "|---|" + "---|" * (len(block.header) - 1)]
            md += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows] + [""]
        elif isinstance(block, Image):
            md += [f"![{block.caption}]({block.file})", ""]
    return "\n".join(md).rstrip("\n") + "\n"


# ---------------------------------------------------------------- HTML
_HTML = {"": "{}", "bold": "<b>{}</b>", "code": "<code>{}</code>", "italic": "<i>{}</i>", "quote": "<q>{}</q>"}
_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
          "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}"
          "table.num td:not(:first-child){text-align:right}table.text td{width:50%;font-size:90%}"
          "img{max-width:100%}")


def _html_spans(spans: list[Span]) -> str:
    return "".join(_HTML[s.style].format(html.escape(s.text)) for s in spans)


def _html_block(block) -> str:
    esc = html.escape
    if isinstance(block, Heading):
        return f"<h{block.level}>{esc(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p>{_html_spans(block.spans)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_html_spans(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        head = "".join(f"<th>{esc(h)}</th>" for h in block.header)
        rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in block.rows)
        return f"<table class='{'num' if block.numeric else 'text'}'><tr>{head}</tr>{rows}</table>"
    if isinstance(block, Image):
        return f"<figure><img src='{esc(block.file)}' alt='{esc(block.caption)}'><figcaption>{esc(block.caption)}</figcaption></figure>"
    raise TypeError(f"no HTML for {type(block).__name__}")


def to_html(doc: Document) -> str:
    body = "".join(_html_block(b) for b in doc.blocks)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>nslm evaluation</title><style>{_STYLE}</style>"
            f"</head><body><h1>{html.escape(doc.title)}</h1>{body}</body></html>\n")
