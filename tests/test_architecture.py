"""The layer rules of docs/ARCHITECTURE.md, checked by parsing every import of src/nslm (no code runs).

Lower layers never import higher ones, so inference does not need the training loop, training does
not need the generation face, and a tokenizer or a model can be used without the data pipeline.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nslm

SRC = Path(nslm.__file__).parent

# (importing area, imported area): never.
FORBIDDEN = [
    ("generate", "train"),
    ("train", "generate"),
    ("tokenizer", "data"),
    ("models", "train"),
    ("models", "data"),
    # sweeps stand on training and evaluation; nothing below them knows of sweeps
    *((area, "sweep") for area in ("data", "tokenizer", "models", "train", "generate", "eval", "interop", "bench")),
]
# The modules below every area import none of the areas; the weight files know the model configs only.
BASE = ("errors", "atomic", "device", "sampling", "hub")
AREAS = ("data", "tokenizer", "models", "train", "generate", "eval", "interop", "gui", "bench", "sweep")
ABOVE_MODELS = ("data", "tokenizer", "train", "generate", "eval", "interop", "gui", "bench", "sweep")
# Own modules are imported at module level; a function-local import is kept only in the command-line
# faces (which import their area's code when a command runs, so `nslm --help` stays quick) and in
# `nslm.load` (so `import nslm` stays light).
LOCAL_IMPORTS_ALLOWED = {"__init__.py", "cli.py", "data/tokenizer_cli.py", "eval/cli.py", "gui/cli.py",
                         "generate/cli.py", "train/cli.py", "bench/cli.py", "data/cli.py", "interop/cli.py", "sweep/cli.py"}


def _area(relative: Path) -> str:
    """`train` for train/loop.py, `device` for device.py."""
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _nslm_imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported nslm module, line, whether the import is inside a function) for every import in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    local = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
             for node in ast.walk(fn)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "nslm":
            # `from nslm import x` names a submodule x (or the root's own `load`)
            names = [f"nslm.{a.name}" for a in node.names] if node.module == "nslm" else [node.module]
            found += [(name, node.lineno, id(node) in local) for name in names]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno, id(node) in local) for a in node.names if a.name.split(".")[0] == "nslm"]
    return found


def _all_imports():
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC)
        for module, line, is_local in _nslm_imports(path):
            parts = module.split(".")
            target = parts[1] if len(parts) > 1 else ""
            yield relative, _area(relative), target, line, is_local


def test_layers_do_not_reach_upwards():
    broken = [f"{rel}:{line} imports nslm.{target}" for rel, area, target, line, _ in _all_imports()
              if (area, target) in FORBIDDEN or (area in BASE and target in AREAS)
              or (area == "weights" and target in ABOVE_MODELS)]
    assert broken == []


def test_own_modules_are_imported_at_module_level():
    hidden = [f"{rel}:{line}" for rel, _, _, line, is_local in _all_imports()
              if is_local and rel.as_posix() not in LOCAL_IMPORTS_ALLOWED]
    assert hidden == []


def test_the_checker_sees_a_forbidden_import(tmp_path):
    # the rules above would pass vacuously if the parser found nothing
    sample = tmp_path / "loop.py"
    sample.write_text("import torch\nfrom nslm.weights import load_weights\n\n\ndef f():\n"
                      "    from nslm.generate.api import load\n", encoding="utf-8")
    assert _nslm_imports(sample) == [("nslm.weights", 2, False), ("nslm.generate.api", 6, True)]
    assert any(target == "generate" for _, area, target, _, _ in _all_imports() if area == "gui")
