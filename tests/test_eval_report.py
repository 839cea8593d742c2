"""`nslm eval all --quick` end to end on two tiny trained models (a Transformer and an LSTM)."""

from __future__ import annotations

import json

import pytest

from nslm.cli import main
from nslm.eval import datasets, genset, report

@pytest.fixture(scope="module")
def runs(tiny_run):
    """The session's tiny Transformer and LSTM runs (shared with the GUI tests; nothing here writes into them)."""
    return [tiny_run("transformer-1m"), tiny_run("lstm-1m")]


@pytest.mark.slow
def test_eval_all_quick_writes_a_side_by_side_report(runs, data_dir, eval_sets, tmp_path, capsys):
    from nslm.eval import grammar

    out = tmp_path / "report"
    args = ["eval", "all", *sum((["--model", str(r)] for r in runs), []), "--data", str(data_dir), "--out", str(out),
            "--quick", "--val-max-tokens", "3000", "--prompt-limit", "2", "--max-new-tokens", "24",
            "--index-limit", "40", "--index-dir", str(tmp_path / "index"), "--blimp", str(eval_sets["blimp"]),
            "--blimp-limit", "2", "--cola", str(eval_sets["cola"]), "--cola-limit", "60",
            "--hellaswag", str(eval_sets["hellaswag"]), "--hellaswag-limit", "8"]
    paradigms = len({p["file"] for p in grammar.load_blimp(eval_sets["blimp"])})  # 67 in BLiMP itself
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "bits per byte" in printed and "report:" in printed
    results = json.loads((out / "results.json").read_text())
    assert set(results["models"]) == {"transformer-1m", "lstm-1m"}
    assert results["seed"] == 1234 and results["quick"] and results["versions"]["torch"]
    for name, res in results["models"].items():
        s = res["summary"]
        for key in ("bits_per_byte", "perplexity", "blimp.accuracy", "cola.mcc", "hellaswag.accuracy",
                    "novelty.mean_max_cosine", "novelty.ngram4_overlap"):
            assert s[key] is not None, (name, key)
        # Barely trained models: far from perfect, far better than nothing.
        assert 1.0 < s["bits_per_byte"] < 4.0 and 1 < s["perplexity"] < 1024
        assert res["config"]["model"]["arch"] in ("transformer", "lstm")
        assert res["likelihood"]["tokens"] <= 3000 and res["blimp"]["pairs"] == paradigms * 2
        assert res["hellaswag"]["items"] == 8 and res["generation"]["stories"] == 2
        assert "judge" in res["skipped"]  # no grader given: said so, nothing invented
        assert (out / f"stories-{name}.jsonl").is_file()
    for file in ("report.md", "report.html", "loss_curves.png", "bpb_vs_params.png", "novelty_hist.png",
                 "blimp_phenomena.png"):
        assert (out / file).stat().st_size > 100, file
    md = (out / "report.md").read_text()
    assert "| measure | transformer-1m | lstm-1m |" in md and "nearest training story" in md
    assert f"2 stories generated from {genset.prompt_set()}" in md  # which prompts: the paper's, or nslm's own


def test_missing_data_skips_only_that_step(runs, data_dir, eval_sets, tmp_path):
    out = tmp_path / "r"
    opts = report.EvalOptions(steps=("likelihood", "blimp", "hellaswag"), val_max_tokens=2000,
                              blimp=str(tmp_path / "no-blimp"), hellaswag=str(eval_sets["hellaswag"]), hellaswag_limit=4)
    results = report.run_all([str(runs[0])], str(data_dir), out, opts)
    res = results["models"]["transformer-1m"]
    assert "does not exist" in res["skipped"]["blimp"]
    assert res["summary"]["bits_per_byte"] and res["summary"]["hellaswag.accuracy"] is not None
    assert (out / "report.md").is_file()


def test_bad_input_is_one_sentence(tmp_path, capsys, data_dir):
    assert main(["eval", "all", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", "likelihood", "--model", str(tmp_path / "nope"), "--data", str(data_dir)]) == 2
    assert not (tmp_path / "r").exists()


def test_subcommands_on_a_trained_model(runs, data_dir, eval_sets, tmp_path, capsys):
    run = str(runs[1])
    stories = tmp_path / "s.jsonl"
    prompts = tmp_path / "p.txt"
    prompts.write_text("Once upon a time, there was a\nTom and Sue went to the\n")
    assert main(["eval", "generate", "--model", run, "--prompts", str(prompts), "--max-new-tokens", "16",
                 "--out", str(stories)]) == 0
    rows = [json.loads(line) for line in stories.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["Once upon a time, there was a", "Tom and Sue went to the"]
    assert all({"completion", "tokens", "ended"} <= set(r) for r in rows)
    again = tmp_path / "s2.jsonl"
    main(["eval", "generate", "--model", run, "--prompts", str(prompts), "--max-new-tokens", "16", "--out", str(again)])
    assert again.read_text() == stories.read_text()  # fixed seed: the same set again
    assert main(["eval", "likelihood", "--model", run, "--max-tokens", "2000", "--json", str(tmp_path / "l.json")]) == 0
    assert json.loads((tmp_path / "l.json").read_text())["bits_per_byte"] > 0
    assert main(["eval", "hellaswag", "--model", run, "--hellaswag", str(eval_sets["hellaswag"]), "--limit", "4"]) == 0
    assert main(["eval", "blimp", "--model", run, "--blimp", str(eval_sets["blimp"]), "--blimp-limit", "1"]) == 0
    assert main(["eval", "novelty", "--data", str(data_dir), "--stories", str(stories), "--index-limit", "30",
                 "--index-dir", str(tmp_path / "ix")]) == 0
    out = capsys.readouterr().out
    assert "HellaSwag accuracy" in out and "BLiMP accuracy" in out and "4-grams seen in training" in out
    # a story that ends within three words has no 4-gram of its own: a dash, not a crash
    short = tmp_path / "short.jsonl"
    short.write_text(json.dumps({"prompt": "Once upon a time,", "completion": " the end."}) + "\n")
    assert main(["eval", "novelty", "--data", str(data_dir), "--stories", str(short), "--index-limit", "30",
                 "--index-dir", str(tmp_path / "ix")]) == 0
    assert "4-gram overlap –:" in capsys.readouterr().out


def test_grader_means_reach_the_report(runs, tmp_path):
    import threading
    from http.server import ThreadingHTTPServer

    from test_eval_judge import FakeGrader

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeGrader)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        opts = report.EvalOptions(steps=("generate", "judge"), prompt_limit=2, max_new_tokens=12,
                                  judge_url=f"http://127.0.0.1:{httpd.server_address[1]}/v1", judge_model="fake",
                                  judge_retries=0, judge_timeout=5)
        results = report.run_all([str(runs[0])], None, tmp_path / "r", opts)
    finally:
        httpd.shutdown()
    summary = results["models"]["transformer-1m"]["summary"]
    assert summary["judge.grammar"] == 8 and summary["judge.consistency"] == 9
    assert "LLM grade: grammar /10 | 8.00" in (tmp_path / "r" / "report.md").read_text()


def test_one_step_table_drives_the_options_the_skip_choices_and_the_summary():
    import argparse
    import dataclasses

    from nslm.cli import build_parser
    from nslm.eval import steps

    fields = {f.name for f in dataclasses.fields(report.EvalOptions)}
    assert fields == {"seed", "steps", "quick"} | {o.field for o in steps.all_options()}
    eval_all = build_parser()._subparsers._group_actions[0].choices["eval"]._subparsers._group_actions[0].choices["all"]
    skip = next(a for a in eval_all._actions if a.dest == "skip")
    assert tuple(skip.choices) == steps.STEP_NAMES == report.EvalOptions().steps
    flags = {s for a in eval_all._actions for s in a.option_strings}
    assert {o.flag for o in steps.all_options()} <= flags
    quick = report.EvalOptions().apply_quick()
    assert (quick.blimp_limit, quick.max_new_tokens, quick.temperature) == (12, 200, 0.8)
    full = report.EvalOptions(max_new_tokens=50).fill_defaults()
    assert (full.blimp_limit, full.max_new_tokens, full.judge_model) == (None, 50, "gpt-4o-mini")
    keys = set(steps.summarise({}))
    assert keys == {f.key for f in steps.FIGURES} and "blimp.accuracy" in keys and "judge.plot" in keys
    assert isinstance(eval_all.formatter_class, type) and issubclass(eval_all.formatter_class, argparse.HelpFormatter)


def test_markdown_and_html_render_the_same_document():
    from nslm.eval import render

    results = {"created": "now", "data": "d", "seed": 1, "quick": True, "seconds": 3, "models": {
        "m": {"config": {"model": {"arch": "lstm"}}, "params": {"total": 10}, "skipped": {"judge": "no grader"},
              "summary": {"params": 10, "blimp.accuracy": 0.5}, "standard_errors": {"blimp.accuracy": 0.05},
              "blimp": {"pairs": 100, "ties": 0, "by_phenomenon": {"agreement": 0.5}}}}}
    doc = render.build_document(results, [("blimp_phenomena.png", "BLiMP accuracy per phenomenon")])
    md, page = render.to_markdown(doc), render.to_html(doc)
    assert "| BLiMP accuracy (chance 50%) | 50.0% ± 5.0% |" in md and "<td>50.0% ± 5.0%</td>" in page
    for text in ("judge skipped: no grader", "BLiMP per phenomenon", "agreement", "blimp_phenomena.png"):
        assert text in md and text in page, text


def test_missing_evaluation_data_says_what_to_download(monkeypatch, capsys, tmp_path):
    from nslm.eval import datasets

    monkeypatch.delenv("NSLM_SHARED_DATA", raising=False)
    monkeypatch.setattr(datasets, "shared_data_dir", lambda: None)
    for name, flag, source in (("blimp", "--blimp", "github.com/alexwarstadt/blimp"),
                               ("cola", "--cola", "nyu-mll.github.io/CoLA"),
                               ("hellaswag", "--hellaswag", "github.com/rowanz/hellaswag")):
        hint = datasets.missing_data_hint(name)
        assert flag in hint and "NSLM_SHARED_DATA" in hint and source in hint
    assert main(["eval", "hellaswag", "--model", "tinystories-gru-1m"]) == 2
    err = capsys.readouterr().err
    assert "--hellaswag FILE" in err and "rowanz/hellaswag" in err and "Traceback" not in err
    monkeypatch.setenv("NSLM_SHARED_DATA", str(tmp_path))
    (tmp_path / "cola").mkdir()
    assert datasets.find_data("cola") == tmp_path / "cola"


def test_without_the_papers_prompts_generation_uses_nslms_own_story_openings(monkeypatch, tmp_path, capsys):
    import yaml

    monkeypatch.delenv("NSLM_SHARED_DATA", raising=False)
    monkeypatch.setattr(datasets, "shared_data_dir", lambda: None)
    bundled = datasets.bundled_data_path("prompts")
    assert genset.default_prompts_path() == bundled and genset.prompt_set().startswith("nslm's own story openings")
    prompts = genset.load_prompts()
    assert prompts == [p.strip() for p in yaml.safe_load(bundled.read_text(encoding="utf-8"))]
    assert len(set(prompts)) == len(prompts) >= 12  # --quick takes 12
    # story beginnings cut off mid-sentence, as the paper's are, so the model carries the story on
    assert not any(p.endswith((".", "!", "?")) for p in prompts)
    stories = tmp_path / "s.jsonl"
    assert main(["eval", "generate", "--model", "tinystories-transformer-1m", "--prompt-limit", "2",
                 "--max-new-tokens", "8", "--out", str(stories)]) == 0
    assert "from nslm's own story openings" in capsys.readouterr().out
    assert [json.loads(line)["prompt"] for line in stories.read_text().splitlines()] == prompts[:2]
    # the paper's file wins wherever it is found
    paper = tmp_path / "tinystories_eval_prompts" / "Evaluation prompts.yaml"
    paper.parent.mkdir()
    paper.write_text('- "Once upon a time, a frog"\n', encoding="utf-8")
    monkeypatch.setenv("NSLM_SHARED_DATA", str(tmp_path))
    assert genset.load_prompts() == ["Once upon a time, a frog"]
    assert genset.prompt_set() == "the TinyStories paper's evaluation prompts"
    assert genset.prompt_set(tmp_path / "mine.txt") == f"the prompts of {tmp_path / 'mine.txt'}"


def test_the_bundled_story_openings_are_installed_with_the_package():
    import fnmatch
    import tomllib
    from pathlib import Path

    package = Path(datasets.__file__).resolve().parents[1]
    pyproject = tomllib.loads((package.parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["nslm"]
    bundled = datasets.bundled_data_path("prompts").resolve().relative_to(package).as_posix()
    assert any(fnmatch.fnmatch(bundled, pattern) for pattern in patterns), (bundled, patterns)
