"""Every `nslm` subcommand, given bad arguments, says so in one line and writes nothing.

The subcommands are found by walking the argparse tree, so a new one is covered at once: each gets
generic rows derived from its own options (an unknown option, a word for every number, a value outside
every choice list) and must also have hand-written rows below (missing, empty and binary files, wrong
formats, absurd values, NaN, wrong types, empty prompts). Each case runs in-process through
`nslm.cli.main` and must end with exit 2, exactly one stderr line starting with `error:`, no traceback,
and no file created, changed or removed in the working folder, the inputs or NSLM_HOME.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import pytest

from nslm.cli import build_parser, main, positive_int
from nslm.tokenizer import EOT

pytestmark = pytest.mark.timeout(120)

SHIPPED = "tinystories-transformer-1m"
GOOD_STORY = ("Once upon a time, there was a little dog named Max. Max liked to run in the park with his red "
              "ball. One day, he lost the ball under a big tree. He looked and looked until he found it. "
              "Max was very happy and ran home to his mom.")


def _leaf_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict:
    """{("data", "prepare"): its parser, ...} for every subcommand that does work (has no steps below)."""
    found = {}
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs and path:
        found[path] = parser
    for action in subs:
        for name, child in action.choices.items():
            found.update(_leaf_commands(child, path + (name,)))
    return found


LEAVES = _leaf_commands(build_parser())


def _generic_rows() -> list:
    """Bad values every parser must refuse, derived from its own options."""
    rows = []
    for path, parser in LEAVES.items():
        name = " ".join(path)
        rows.append(pytest.param([*path, "--no-such-option"], id=f"{name}: unknown option"))
        for action in parser._actions:
            flag = next((s for s in action.option_strings if s.startswith("--")), None)
            if flag is None:
                continue
            if action.type in (int, float, positive_int):
                rows.append(pytest.param([*path, flag, "abc"], id=f"{name}: {flag} abc"))
            if action.choices:
                rows.append(pytest.param([*path, flag, "no-such-choice"], id=f"{name}: {flag} bad choice"))
    return rows


# (command line, what the error must mention). Names in capitals are files made by `bad_inputs`.
CASES = [
    # data prepare
    (["data", "prepare", "--train", "MISSING.txt", "--out", "OUT"], "does not exist"),
    (["data", "prepare", "--train", "/dev/zero", "--out", "OUT"], "/dev/zero is not a regular file"),
    (["data", "prepare", "--train", "EMPTY.txt", "--out", "OUT"], "is empty"),
    (["data", "prepare", "--train", "BINARY.txt", "--out", "OUT"], "binary"),
    (["data", "prepare", "--train", "NOSEP.txt", "--out", "OUT"], "--split-on"),
    (["data", "prepare", "--train", "LATIN1.txt", "--out", "OUT"], "not UTF-8"),
    (["data", "prepare", "--train", "DEEP.jsonl", "--out", "OUT"], "nested too deeply"),
    (["data", "prepare", "--train", "NOSTORY.jsonl", "--out", "OUT"], "no 'story' or 'text'"),
    (["data", "prepare", "--train", "GOOD.txt", "--out", "/proc/nslm-out"], "cannot write --out"),
    (["data", "prepare", "--train", "GOOD.txt", "--out", "GOOD.txt/sub"], "is a file"),
    (["data", "prepare", "--train", "GOOD.txt", "--out", "GOOD.txt"], "is a file"),
    (["data", "prepare", "--train", "GOOD.txt", "--out", "OUT", "--valid-share", "nan"], "--valid-share"),
    (["data", "prepare", "--train", "GOOD.txt", "--out", "OUT", "--near-dup-threshold", "nan"], "threshold"),
    (["data", "prepare", "--train", "GOOD.txt", "--out", "OUT", "--vocab-size", "10"], "vocab"),
    (["data", "prepare", "--train", "GOOD.txt", "--out", "OUT", "--tokenizer", "klingon"], "klingon"),
    (["data", "prepare", "--train", "GOOD.txt", "--out", "OUT", "--min-words", "-1"], "--min-words"),
    (["data", "prepare", "--train", "GOOD.txt", "--out", "OUT", "--num-perm", "0"], "--num-perm"),
    (["data", "prepare", "--train", "GOOD.txt", "--out", "OUT", "--max-stories", "-3"], "--max-stories"),
    (["data", "prepare", "--train", "GOOD.txt", "--out", "OUT", "--tokenizer-sample", "0"], "--tokenizer-sample"),
    (["data", "prepare", "--out", "OUT"], "no training files"),
    # data clean
    (["data", "clean", "--train", "BINARY.txt", "--out", "OUT"], "binary"),
    (["data", "clean", "--train", "LATIN1.txt", "--out", "OUT"], "not UTF-8"),
    (["data", "clean", "--train", "GOOD.txt", "--out", "/proc/nslm-out"], "cannot write --out"),
    (["data", "clean", "--train", "GOOD.txt", "--valid", "EMPTY.txt", "--out", "OUT"], "is empty"),
    (["data", "clean", "--train", "GOOD.txt", "--out", "OUT", "--vocab-limit", "0"], "--vocab-limit"),
    # data tokenize
    (["data", "tokenize", "MISSING"], "does not exist"),
    (["data", "tokenize", "INPUTS"], "no train.txt"),
    (["data", "tokenize", "CLEANED", "--tokenizer", "BINARY.txt"], "BINARY.txt"),
    (["data", "tokenize", "CLEANED", "--tokenizer", "MISSING.json"], "MISSING.json"),
    # data match
    (["data", "match", "--model", "MISSING", "DATA"], "MISSING"),
    (["data", "match", "--model", "RUN_BAD_STATE", "DATA"], "is corrupt"),
    (["data", "match", "--model", SHIPPED, "DATA", "INPUTS"], "INPUTS"),  # another tokenizer; no data folder
    # tokenizer train / report
    (["tokenizer", "train", "--input", "MISSING.txt", "--out", "OUT"], "does not exist"),
    (["tokenizer", "train", "--input", "BINARY.txt", "--out", "OUT"], "binary"),
    (["tokenizer", "train", "--input", "GOOD.txt", "--out", "OUT", "--kind", "klingon"], "klingon"),
    (["tokenizer", "train", "--input", "GOOD.txt", "--out", "OUT", "--vocab-size", "-5"], "vocab"),
    (["tokenizer", "train", "--input", "GOOD.txt", "--out", "OUT", "--sample", "-1"], "--sample"),
    (["tokenizer", "train", "--input", "GOOD.txt", "--out", "GOOD.txt/sub"], "is a file"),
    (["tokenizer", "report", "MISSING.json", "--valid", "GOOD.txt"], "MISSING.json"),
    (["tokenizer", "report", "BINARY.txt", "--valid", "GOOD.txt"], "BINARY.txt"),
    (["tokenizer", "report", "TOKENIZER", "--valid", "EMPTY.txt"], "is empty"),
    (["tokenizer", "report", "TOKENIZER", "--valid", "GOOD.txt", "--max-stories", "0"], "--max-stories"),
    (["tokenizer", "report", "TOKENIZER", "--valid", "GOOD.txt", "--json", "/proc/nslm.json"], "cannot write --json"),
    # train
    (["train", "--data", "MISSING", "--out", "OUT"], "MISSING"),
    (["train", "--data", "INPUTS", "--out", "OUT"], "data folder"),
    (["train", "--data", "DATA", "--out", "OUT", "--preset", "no-such-preset"], "no-such-preset"),
    (["train", "--data", "DATA", "--out", "OUT", "--set", "model.d_model=-1"], "d_model"),
    (["train", "--data", "DATA", "--out", "OUT", "--set", "nonsense"], "nonsense"),
    (["train", "--data", "DATA", "--out", "OUT", "--max-steps", "-1"], "max_steps"),
    (["train", "--data", "DATA", "--out", "OUT", "--config", "MISSING.toml"], "MISSING.toml"),
    (["train", "--data", "DATA", "--out", "OUT", "--config", "BINARY.txt"], "BINARY.txt"),
    (["train", "--data", "DATA", "--out", "OUT", "--config", "CLEANED"], "is a folder, not a file"),
    (["train", "--data", "DATA", "--out", "GOOD.txt/sub"], "is a file"),
    (["train", "--resume", "MISSING"], "MISSING"),
    (["train", "--data", "DEEPMETA", "--out", "OUT"], "meta.json"),
    (["train", "--data", "DATA", "--out", "OUT", "--set", "train.min_lr_ratio=abc"], "min_lr_ratio"),
    (["train", "--data", "DATA", "--out", "OUT", "--max-minutes", "nan"], "max_minutes"),
    (["train", "--resume", "RUN_BAD_STATE"], "is corrupt"),  # its config.json is "{}" too
    # generate
    (["generate", "--model", "MISSING", "Once upon a time"], "MISSING"),
    (["generate", "--model", "INPUTS", "Once upon a time"], "INPUTS"),
    (["generate", "--model", SHIPPED, "Once upon a time", "--num-samples", "0"], "--num-samples"),
    (["generate", "--model", SHIPPED, "Once upon a time", "--num-samples", "100000000"], "at most 10,000"),
    (["bench", "generate", "--tokens", "100000000"], "at most 100,000"),
    (["bench", "train", "--context", "0"], "--context: must be at least 1"),
    (["generate", "--model", SHIPPED], "prompt"),
    (["generate", "--model", SHIPPED, ""], "prompt"),
    (["generate", "--model", SHIPPED, "Once", "--max-tokens", "-1"], "max"),
    (["generate", "--model", SHIPPED, "Once", "--top-p", "2"], "top"),
    (["generate", "--model", SHIPPED, "Once", "--top-k", "-3"], "top"),
    (["generate", "--model", SHIPPED, "Once", "--temperature", "nan"], "temperature"),
    (["generate", "--model", SHIPPED, "Once", "--seed", str(2 ** 70)], "seed"),
    # eval
    (["eval", "likelihood", "--model", "MISSING", "--data", "DATA"], "MISSING"),
    (["eval", "likelihood", "--model", SHIPPED, "--data", "MISSING"], "MISSING"),
    (["eval", "likelihood", "--model", SHIPPED, "--data", "INPUTS"], "INPUTS"),
    (["eval", "likelihood", "--model", SHIPPED, "--data", "DATA"], "another tokenizer"),
    (["eval", "likelihood", "--model", SHIPPED, "--data", "DEEPMETA"], "meta.json"),
    (["eval", "likelihood", "--model", SHIPPED, "--data", "DATA", "--stride", "0"], "--stride"),
    (["eval", "generate", "--model", SHIPPED, "--out", "GOOD.txt/s.jsonl"], "is a file"),
    (["eval", "generate", "--model", SHIPPED, "--out", "S.jsonl", "--prompts", "EMPTY.txt"], "EMPTY.txt"),
    (["eval", "generate", "--model", SHIPPED, "--out", "S.jsonl", "--prompts", "BINARY.txt"], "BINARY.txt"),
    (["eval", "generate", "--model", SHIPPED, "--out", "S.jsonl", "--temperature", "nan"], "temperature"),
    (["eval", "novelty", "--data", "MISSING"], "MISSING"),
    (["eval", "novelty", "--data", "DATA", "--stories", "BINARY.txt", "--index-dir", "/proc/nslm-idx"],
     "cannot write --index-dir"),
    (["eval", "novelty", "--data", "DATA", "--index-limit", "-1"], "limit"),
    (["eval", "blimp", "--model", SHIPPED, "--blimp", "MISSING"], "MISSING"),
    (["eval", "blimp", "--model", SHIPPED, "--blimp", "INPUTS"], "INPUTS"),
    (["eval", "cola", "--model", SHIPPED, "--cola", "MISSING"], "MISSING"),
    (["eval", "hellaswag", "--model", SHIPPED, "--hellaswag", "BINARY.txt"], "BINARY.txt"),
    (["eval", "hellaswag", "--model", SHIPPED, "--hellaswag", "EMPTY.txt"], "EMPTY.txt"),
    (["eval", "judge", "--stories", "MISSING.jsonl", "--judge-url", "http://127.0.0.1:9"], "MISSING.jsonl"),
    (["eval", "judge", "--stories", "NOSTORY.jsonl", "--judge-url", "http://127.0.0.1:9"], "NOSTORY.jsonl"),
    (["eval", "human", "--db", "missing/dir/x.sqlite"], "missing/dir/x.sqlite"),
    (["eval", "human", "--db", "BINARY.txt"], "BINARY.txt"),
    (["eval", "human", "--db", "INPUTS"], "INPUTS"),
    (["eval", "all", "--model", "MISSING", "--out", "REPORT"], "MISSING"),
    (["eval", "all", "--model", SHIPPED, "--out", "GOOD.txt/report"], "is a file"),
    # gui: refused before anything is served
    (["export", "MISSING", "OUT"], "MISSING"),
    (["export", "INPUTS", "OUT"], "INPUTS"),
    (["export", "tinystories-gru-1m", "OUT"], "GRU"),
    (["export", "RUN_BAD_STATE", "OUT"], "RUN_BAD_STATE"),
    (["export", SHIPPED, "GOOD.txt/sub"], "GOOD.txt"),
    (["export", SHIPPED, "/proc/nslm-export"], "/proc/nslm-export"),
    (["gui", "--port", "99999"], "--port"),
    (["gui", "--port", "0"], "--port"),
    # sweep: the spec and the folders are checked before anything is written
    (["sweep", "run", "MISSING.toml", "--out", "OUT"], "does not exist"),
    (["sweep", "run", "BINARY.txt", "--out", "OUT"], "not UTF-8"),
    (["sweep", "run", "BADTOML.toml", "--out", "OUT"], "not valid TOML"),
    (["sweep", "run", "UNKNOWN.toml", "--out", "OUT"], "unknown setting 'model.no_such_field'"),
    (["sweep", "run", "EMPTYGRID.toml", "--out", "OUT"], "non-empty list"),
    (["sweep", "run", "NOGRID.toml", "--out", "OUT"], "[grid] is empty"),
    (["sweep", "run", "NOVARY.toml", "--out", "OUT"], "varies nothing"),
    (["sweep", "run", "ABSURD.toml", "--out", "OUT"], "budget steps"),
    (["sweep", "run", "TWOBUDGETS.toml", "--out", "OUT"], "exactly one of minutes, tokens or steps"),
    (["sweep", "run", "BADVALUE.toml", "--out", "OUT"], "klingon"),
    (["sweep", "run", "BADRANGE.toml", "--out", "OUT"], "low < high"),
    (["sweep", "run", "BADDATA.toml", "--out", "OUT"], "list of data folders"),
    (["sweep", "run", "NODATA.toml", "--out", "OUT"], "MISSING-DATA"),
    (["sweep", "run", "SPEC.toml", "--out", "/proc/nslm-sweep"], "cannot write"),
    (["sweep", "run", "SPEC.toml", "--out", "GOOD.txt"], "is a file"),
    (["sweep", "run", "SPEC.toml", "--out", "CLEANED"], "not a sweep folder"),
    (["sweep", "run", "SPEC.toml", "--out", "OUT", "--storage", "nonsense://nowhere"], "nonsense://nowhere"),
    (["sweep", "worker"], "--storage"),
    (["sweep", "worker", "CLEANED"], "not a sweep folder"),
    (["sweep", "worker", "--storage", "sqlite:///none.sqlite"], "no study storage"),
    (["sweep", "report", "MISSING"], "MISSING"),
    (["sweep", "report", "CLEANED"], "not a sweep folder"),
    # bench
    (["bench", "train", "--preset", "no-such-preset"], "no-such-preset"),
    (["bench", "train", "--steps", "0"], "--steps"),
    (["bench", "train", "--batch-size", "-2"], "batch"),
    (["bench", "generate", "--model", "MISSING"], "MISSING"),
    (["bench", "generate", "--tokens", "0"], "--tokens"),
    (["bench", "novelty", "--data", "MISSING"], "no train.txt"),
    (["bench", "novelty", "--data", "CLEANED", "--stories", "0"], "--stories"),
    (["bench", "novelty", "--data", "CLEANED", "--queries", "-1"], "--queries"),
    (["bench", "novelty", "--data", "CLEANED", "--repeats", "0"], "--repeats"),
    (["bench", "novelty", "--data", "CLEANED", "--stories", "2000000"], "at most 20,000"),
    (["bench", "novelty", "--data", "CLEANED", "--index-stories", "2100000"], "at most 50,000"),
    (["bench", "novelty", "--data", "CLEANED", "--max-tokens", "1e6"], "--max-tokens"),
]


def _args_of(case) -> list[str]:
    return case.values[0] if hasattr(case, "values") else case[0]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, data_dir) -> Path:
    """A folder of the bad (and a few good) inputs the cases name in capitals."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "EMPTY.txt").write_bytes(b"")
    (root / "BINARY.txt").write_bytes(bytes(range(256)) * 64)
    (root / "GOOD.txt").write_text(f"{GOOD_STORY}\n{EOT}\n" * 3, encoding="utf-8")
    (root / "NOSEP.txt").write_text(GOOD_STORY + "\n\n" + GOOD_STORY + "\n", encoding="utf-8")
    (root / "LATIN1.txt").write_bytes(f"{GOOD_STORY.replace('.', ' café.')}\n{EOT}\n".encode("latin-1") * 5)
    (root / "DEEP.jsonl").write_text(json.dumps({"story": GOOD_STORY}) + "\n" + "[" * 200_000 + "\n")
    (root / "NOSTORY.jsonl").write_text(json.dumps({"title": "no story here"}) + "\n")
    (root / "CLEANED").mkdir()
    for split in ("train", "valid"):
        (root / "CLEANED" / f"{split}.txt").write_text(f"{GOOD_STORY}\n{EOT}\n", encoding="utf-8")
    shutil.copytree(data_dir, root / "DEEPMETA")  # a data folder whose header is nested too deeply
    (root / "DEEPMETA" / "meta.json").write_text("[" * 200_000)
    (root / "TOKENIZER").mkdir()
    (root / "TOKENIZER" / "tokenizer.json").write_bytes((data_dir / "tokenizer.json").read_bytes())
    _sweep_specs(root, data_dir)
    bad_run = root / "RUN_BAD_STATE"
    (bad_run / "last").mkdir(parents=True)
    (bad_run / "config.json").write_text("{}")
    (bad_run / "last" / "state.json").write_text("[]")
    return root


def _sweep_specs(root: Path, data_dir: Path) -> None:
    """A good sweep spec and one of each mistake, on the session's data folder."""
    head = f'preset = "transformer-1m"\ndata = "{data_dir}"\nseeds = [1]\n'
    budget = "[budget]\nsteps = 10\n"
    specs = {
        "SPEC": budget + '[grid]\n"model.pos_encoding" = ["learned", "rope"]\n',
        "BADTOML": budget + "[grid\n",
        "UNKNOWN": budget + '[grid]\n"model.no_such_field" = [1, 2]\n',
        "EMPTYGRID": budget + '[grid]\n"model.pos_encoding" = []\n',
        "NOGRID": budget + "[grid]\n",
        "NOVARY": budget,
        "ABSURD": '[budget]\nsteps = 1000000000000\n[grid]\n"model.pos_encoding" = ["rope"]\n',
        "TWOBUDGETS": '[budget]\nsteps = 10\nminutes = 2\n[grid]\n"model.pos_encoding" = ["rope"]\n',
        "BADVALUE": budget + '[grid]\n"model.pos_encoding" = ["learned", "klingon"]\n',
        "BADDATA": budget + '[grid]\ndata = [1, 2]\n',
        "NODATA": budget + f'[grid]\ndata = ["{data_dir}", "MISSING-DATA"]\n',
        "BADRANGE": 'trials = 3\n' + budget + '[search]\n"train.lr" = {low = 0.01, high = 0.001}\n',
    }
    for name, body in specs.items():
        (root / f"{name}.toml").write_text(head + body, encoding="utf-8")


def _tree(*roots: Path) -> dict:
    """Every file under `roots` with its size and modification time, and every folder."""
    seen = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            seen.update({str(Path(folder, name)): "folder" for name in dirs})
            for name in files:
                stat = Path(folder, name).lstat()
                seen[str(Path(folder, name))] = (stat.st_size, stat.st_mtime_ns)
    return seen


def _resolve(args: list[str], inputs: Path, data_dir: Path) -> list[str]:
    named = {p.name: str(p) for p in inputs.iterdir()} | {"DATA": str(data_dir), "INPUTS": str(inputs)}
    out = []
    for arg in args:
        head, _, rest = arg.partition("/")
        out.append(named[head] + (f"/{rest}" if rest else "") if head in named else arg)
    return out


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse exits; main's own errors return
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_clear_line(code, out, err, argv):
    # progress bars redraw with \r; only what stays on screen counts
    lines = [line.rsplit("\r", 1)[-1] for line in err.split("\n")]
    lines = [line for line in lines if line.strip()]
    assert code == 2, f"{argv}: exit {code}, stderr {err[-2000:]!r}"
    assert "Traceback" not in err + out, f"{argv}: {err[-3000:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{argv}: stderr {lines!r}"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working folder and NSLM_HOME (a GUI served by mistake fails on the module's timeout)."""
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("NSLM_HOME", str(home))
    return tmp_path


@pytest.mark.parametrize("argv", _generic_rows())
def test_generic_bad_argument(argv, capsys, workdir):
    before = _tree(workdir)
    _assert_one_clear_line(*_run(argv, capsys), argv)
    assert _tree(workdir) == before


@pytest.mark.parametrize("args, mention", CASES, ids=[" ".join(_args_of(c))[:80] for c in CASES])
def test_bad_argument(args, mention, capsys, workdir, bad_inputs, data_dir):
    argv = _resolve(args, bad_inputs, data_dir)
    mention = _resolve([mention], bad_inputs, data_dir)[0]
    before = _tree(workdir, bad_inputs, data_dir)
    code, out, err = _run(argv, capsys)
    _assert_one_clear_line(code, out, err, argv)
    assert mention in err, f"{argv}: {err!r} does not mention {mention!r}"
    assert _tree(workdir, bad_inputs, data_dir) == before, f"{argv} wrote or changed files"


def test_every_subcommand_has_cases():
    covered = {tuple(a for a in _args_of(c)[:2] if not a.startswith("-")) for c in CASES}
    # a case covers a subcommand when its words start with the subcommand's (positionals may follow)
    missing = [" ".join(p) for p in LEAVES if not any(c[:len(p)] == p for c in covered)]
    assert not missing, f"add bad-argument cases for: {missing}"
    assert len(LEAVES) >= 18  # data x3, tokenizer x2, train, generate, eval x9, gui, bench x3
