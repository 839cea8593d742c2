"""Files and folders the user may not read or write: each command says so in one line (exit 2, no traceback)
and leaves nothing behind.

Root reads and writes anything, so as root the commands run in a child process without the two capabilities
that let root past file modes (`setpriv` drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH): a file of mode 000 is
then as closed to it as to any user. One child runs every case, so torch is imported once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import nslm

from conftest import TINY_SETTINGS

SRC = Path(nslm.__file__).resolve().parents[1]
SETPRIV = shutil.which("setpriv")
DROP = ["--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]

# Runs each case's arguments through nslm's own entry point and prints one JSON line per case: its exit code and
# stderr. First, whether a mode-000 file is really closed to this process (else the cases would prove nothing).
DRIVER = r"""
import contextlib, io, json, sys
from nslm.cli import main
cases = json.loads(sys.argv[1])
try:
    open(cases.pop(0)[0]).close()
    print(json.dumps({"closed": False}))
except PermissionError:
    print(json.dumps({"closed": True}))
for argv in cases:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own refusals
            code = exc.code
        except BaseException as exc:
            code = f"raised {type(exc).__name__}: {exc}"
    print(json.dumps({"argv": argv, "code": code, "err": err.getvalue()}), flush=True)
"""


def _closed(path: Path) -> Path:
    path.chmod(0)
    return path


@pytest.fixture
def world(tmp_path, data_dir, tiny_run) -> dict:
    """Copies of a data folder and a run with one thing closed in each, and folders that take no new entries."""
    root = tmp_path / "w"
    shutil.copytree(data_dir, root / "data-no-train-bin")
    _closed(root / "data-no-train-bin" / "train.bin")
    shutil.copytree(data_dir, root / "data-read-only")
    for name in ("run-no-weights", "run-no-config", "run-no-tokenizer", "run-no-state"):
        shutil.copytree(tiny_run(), root / name)
    _closed(root / "run-no-weights" / "model.safetensors")
    _closed(root / "run-no-config" / "config.json")
    _closed(root / "run-no-tokenizer" / "tokenizer.json")
    _closed(root / "run-no-state" / "last" / "state.safetensors")
    (root / "secret.txt").write_text((data_dir / "train.txt").read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    _closed(root / "secret.txt")
    (root / "read-only").mkdir()
    (root / "data-read-only").chmod(0o555)
    (root / "read-only").chmod(0o555)
    yield {"root": root, "data": data_dir}
    for path in root.rglob("*"):  # let pytest clean up
        path.chmod(0o755 if path.is_dir() else 0o644)


def _tiny(*args: str) -> list[str]:
    return [*args, *[a for s in TINY_SETTINGS for a in ("--set", s)], "--device", "cpu", "--dtype", "fp32"]


def _cases(root: Path, data: Path) -> list[tuple[list[str], str]]:
    r = str(root)
    return [
        (["data", "prepare", "--train", f"{r}/secret.txt", "--valid", str(data / "valid.txt"), "--out", f"{r}/prepared",
          "--quiet"], "secret.txt: Permission denied"),
        (["data", "prepare", "--train", str(data / "train.txt"), "--out", f"{r}/read-only/prepared", "--quiet"],
         "nothing can be created in"),
        (_tiny("train", "--preset", "transformer-1m", "--data", f"{r}/data-no-train-bin", "--out", f"{r}/new-run",
               "--max-steps", "2"), "train.bin: Permission denied"),
        (_tiny("train", "--preset", "transformer-1m", "--data", str(data), "--out", f"{r}/read-only/run",
               "--max-steps", "2"), "nothing can be created in"),
        (["train", "--resume", f"{r}/run-no-state", "--max-steps", "30"], "state.safetensors"),
        (["generate", "--model", f"{r}/run-no-weights", "Once", "--max-tokens", "3"], "model.safetensors: Permission denied"),
        (["generate", "--model", f"{r}/run-no-config", "Once", "--max-tokens", "3"], "config.json: Permission denied"),
        (["generate", "--model", f"{r}/run-no-tokenizer", "Once", "--max-tokens", "3"], "tokenizer.json: Permission denied"),
        (["eval", "likelihood", "--model", f"{r}/run-no-weights", "--data", str(data)], "model.safetensors"),
        (["eval", "novelty", "--data", f"{r}/data-read-only", "--index-limit", "4"], "--index-dir"),
        (["export", str(root / "run-no-state"), f"{r}/read-only/exported", "--format", "hf"], "nothing can be created in"),
        (["tokenizer", "report", str(data / "tokenizer.json"), "--valid", f"{r}/secret.txt"], "secret.txt"),
    ]


@pytest.mark.skipif(sys.platform != "linux", reason="file modes and capabilities as on Linux")
def test_unreadable_and_unwritable_paths_are_one_line_each(world):
    root, data = world["root"], world["data"]
    cases = _cases(root, data)
    command = [sys.executable, "-c", DRIVER, json.dumps([[str(root / "secret.txt")], *[argv for argv, _ in cases]])]
    if os.geteuid() == 0:
        if SETPRIV is None:
            pytest.skip("as root, the file modes are only enforced without capabilities, and setpriv is missing")
        command = [SETPRIV, *DROP, *command]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stderr[-2000:]
    if not lines[0]["closed"]:
        pytest.skip("a mode-000 file is still readable here (capabilities could not be dropped)")
    results = lines[1:]
    assert len(results) == len(cases), done.stderr[-2000:]
    for (argv, mention), result in zip(cases, results):
        err = result["err"]
        assert result["code"] == 2 and err.startswith("error: ") and err.count("\n") == 1, (argv, result)
        assert mention in err and "Traceback" not in err, (argv, err)
    for made in ("prepared", "new-run", "read-only/prepared", "read-only/run", "read-only/exported"):
        assert not (root / made).exists(), made
    assert sorted(p.name for p in (root / "data-read-only").iterdir()) == sorted(p.name for p in data.iterdir())
