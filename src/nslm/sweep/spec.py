"""A sweep's spec (a TOML file): base preset, data folder, settings held equal, settings varied (a grid, or
ranges for a TPE search), the budget of each trial, the seeds and the measures computed after each trial.

```toml
preset = "transformer-1m"
data = "data/tinystories"
seeds = [1, 2]
[budget]            # exactly one of minutes, tokens, steps
minutes = 3
[fixed]             # held equal in every trial
"train.batch_size" = 16
[grid]              # every combination is one trial (or [search] with ranges, and `trials = N`)
"model.pos_encoding" = ["learned", "sinusoidal", "rope"]
# settings that change together are one grid entry whose values are named tables (a "bundle"):
# shape = [{name = "deep", "model.d_model" = 96, "model.n_layer" = 8}, {name = "wide", "model.d_model" = 160, "model.n_layer" = 2}]
# `preset` and `data` may be varied too: preset = ["transformer-1m", "lstm-1m"], data = ["data/bpe-512", ...]
[measures]          # nslm eval steps after each trial; any other key is an EvalOptions field
steps = ["likelihood"]
quick = true
```

Everything is checked when the spec is read, before anything is written: one sentence names the problem.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from nslm.errors import NslmError
from nslm.eval.report import EvalOptions
from nslm.eval.steps import STEP_NAMES, all_options
from nslm.models import ModelConfig
from nslm.sampling import check_seed
from nslm.train.config import TrainConfig
from nslm.train.run import resolve_run_config

TABLES = {"preset", "data", "seeds", "budget", "fixed", "grid", "search", "trials", "sampler_seed", "measures"}
# The largest budget a trial may be given: a week of minutes, 10^12 tokens, 10^8 steps.
BUDGET_LIMITS = {"minutes": 7 * 24 * 60, "tokens": 10**12, "steps": 10**8}
BUDGET_FIELDS = {"minutes": "max_minutes", "tokens": "max_tokens", "steps": "max_steps"}
MAX_TRIALS = 10_000
SECTIONS = {"model": ModelConfig, "train": TrainConfig}
# Settings a spec may not vary or fix: the seeds, the budget and the data decide them.
RESERVED = {"train.seed": "seeds", "train.max_steps": "[budget]", "train.max_tokens": "[budget]",
            "train.max_minutes": "[budget]", "train.stop_after_steps": "[budget]", "model.vocab_size": "the data folder"}
MEASURE_FIELDS = {f.name for f in dataclasses.fields(EvalOptions)} - {"steps", "quick", "seed"}
# Entries a [grid] or [search] may vary besides settings: the base preset and the data folder (tokenizers,
# data sizes and cleaning rules are data folders), each a list of choices.
RUN_CHOICES = ("preset", "data")


@dataclass(frozen=True)
class Range:
    """A numeric search range for TPE: whole numbers when both ends are, on a log scale when `log`."""

    low: float
    high: float
    log: bool = False

    @property
    def integer(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int)


@dataclass
class SweepSpec:
    """A checked spec. `grid` maps settings to their values; `search` to a `Range` or a list of choices."""

    preset: str
    data: str
    seeds: list[int]
    budget: dict[str, float]  # {"minutes" | "tokens" | "steps": value}
    fixed: dict[str, object] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    search: dict[str, object] = field(default_factory=dict)
    trials: int | None = None
    sampler_seed: int = 0
    measures: dict = field(default_factory=lambda: {"steps": [], "quick": True})
    # grid entries whose values are named bundles of settings: {entry: {name: {setting: value}}}
    bundles: dict[str, dict[str, dict]] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return "grid" if self.grid else "search"

    @property
    def varied(self) -> list[str]:
        return list(self.grid or self.search)

    def total_trials(self) -> int:
        return math.prod(len(v) for v in self.grid.values()) if self.grid else int(self.trials)

    def grid_points(self) -> list[dict]:
        """Every combination of the grid's values, in the spec's order."""
        keys = list(self.grid)
        return [dict(zip(keys, values)) for values in itertools.product(*(self.grid[k] for k in keys))]

    def train_options(self) -> dict:
        """The budget as TrainConfig limits."""
        return {BUDGET_FIELDS[k]: v for k, v in self.budget.items()}

    def expand(self, settings: dict) -> dict:
        """A trial's settings with each bundle's name replaced by the settings it stands for."""
        out = {}
        for key, value in settings.items():
            if key in self.bundles:
                out.update(self.bundles[key][value])
            else:
                out[key] = value
        return out

    def overrides(self, settings: dict) -> list[str]:
        """`section.field=value` strings of the fixed settings, then the trial's own."""
        chosen = {k: v for k, v in self.expand(settings).items() if k not in RUN_CHOICES}
        return [f"{k}={json.dumps(v)}" for k, v in {**self.fixed, **chosen}.items()]

    def data_for(self, settings: dict) -> str:
        """The data folder of a trial: its own where the spec varies `data`, else the spec's."""
        return self.expand(settings).get("data", self.data)

    def preset_for(self, settings: dict) -> str:
        return self.expand(settings).get("preset", self.preset)

    def eval_options(self) -> EvalOptions:
        extra = {k: v for k, v in self.measures.items() if k not in ("steps", "quick")}
        opts = EvalOptions(steps=tuple(self.measures["steps"]), **extra)
        return opts.apply_quick() if self.measures["quick"] else opts.fill_defaults()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["search"] = {k: dataclasses.asdict(v) if isinstance(v, Range) else v for k, v in self.search.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SweepSpec":
        d = dict(d)
        d["search"] = {k: Range(**v) if isinstance(v, dict) else v for k, v in d.get("search", {}).items()}
        return cls(**d)


def read_spec(path: str | Path, data: str | Path | None = None) -> SweepSpec:
    """The checked spec in the TOML file `path`; `data` replaces its data folder (another machine's copy).
    A relative data path is taken from the current folder and recorded absolute."""
    path = Path(path)
    if not path.is_file():
        raise NslmError(f"sweep spec {path} does not exist; give a TOML file such as studies/positional.toml")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise NslmError(f"sweep spec {path} is not UTF-8 text; give a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise NslmError(f"sweep spec {path} is not valid TOML ({exc})") from None
    return check_spec(raw, str(path), data)


def check_spec(raw: dict, where: str, data: str | Path | None = None) -> SweepSpec:
    """A SweepSpec from the parsed TOML `raw`, every value checked; `where` names the file in errors."""
    unknown = sorted(set(raw) - TABLES)
    if unknown:
        raise NslmError(f"{where}: unknown entry {unknown[0]!r}; a spec holds {', '.join(sorted(TABLES))}")
    preset = raw.get("preset", "transformer-1m")
    if not isinstance(preset, str):
        raise NslmError(f"{where}: preset must be a preset name such as transformer-1m")
    varied = raw.get("grid") or raw.get("search")
    varied_data = varied.get("data") if isinstance(varied, dict) else None
    data = data if data is not None else raw.get("data")
    if data is None and isinstance(varied_data, list) and varied_data and isinstance(varied_data[0], str):
        data = varied_data[0]  # the varied folders decide; the first stands for the spec in reports
    if not isinstance(data, (str, Path)) or not str(data):
        raise NslmError(f"{where}: data must name a data folder made by nslm data prepare")
    spec = SweepSpec(preset=preset, data=str(Path(data).resolve()), seeds=_seeds(raw.get("seeds", [1337]), where),
                     budget=_budget(raw.get("budget"), where), fixed=_settings(raw.get("fixed", {}), where, "fixed"),
                     sampler_seed=_sampler_seed(raw.get("sampler_seed", 0), where),
                     measures=_measures(raw.get("measures", {}), where))
    grid, search = raw.get("grid"), raw.get("search")
    if grid is not None and search is not None:
        raise NslmError(f"{where}: give either [grid] (every combination) or [search] (ranges for TPE), not both")
    if grid is None and search is None:
        raise NslmError(f"{where}: the spec varies nothing; add a [grid] of values or a [search] of ranges")
    if grid is not None:
        if isinstance(grid, dict):
            spec.bundles = _bundles(grid, where)
            grid = {k: v for k, v in grid.items() if k not in spec.bundles}
        spec.grid = _grid(grid, where, spec.bundles)
        if "trials" in raw:
            raise NslmError(f"{where}: `trials` is for a [search]; a [grid] runs every combination once")
    else:
        spec.search = _search(search, where)
        spec.trials = _trials(raw.get("trials"), where)
    bundled = {k for named in spec.bundles.values() for settings in named.values() for k in settings}
    overlap = sorted(set(spec.fixed) & (set(spec.varied) | bundled))
    if overlap:
        raise NslmError(f"{where}: {overlap[0]} is both fixed and varied; keep it in one table")
    _check_runs(spec, where)
    return spec


def _seeds(seeds, where: str) -> list[int]:
    if not isinstance(seeds, list) or not seeds:
        raise NslmError(f"{where}: seeds must be a non-empty list of whole numbers, e.g. seeds = [1, 2]")
    for seed in seeds:
        check_seed(seed, f"{where}: each seed")
    if len(set(seeds)) != len(seeds):
        raise NslmError(f"{where}: seeds repeat a seed; each seed trains once per trial")
    return list(seeds)


def _budget(budget, where: str) -> dict:
    if not isinstance(budget, dict) or len(budget) != 1 or next(iter(budget)) not in BUDGET_LIMITS:
        raise NslmError(f"{where}: [budget] must give exactly one of minutes, tokens or steps per trial")
    (kind, value), = budget.items()
    whole = kind != "minutes"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok or (whole and not isinstance(value, int)) or value > BUDGET_LIMITS[kind]:
        what = "a positive whole number" if whole else "a positive number"
        raise NslmError(f"{where}: budget {kind} must be {what} of at most {BUDGET_LIMITS[kind]:,}, not {value!r}")
    return {kind: value}


def _sampler_seed(value, where: str) -> int:
    check_seed(value, f"{where}: sampler_seed")
    return value


def _trials(value, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_TRIALS:
        raise NslmError(f"{where}: a [search] needs trials = N, a whole number from 1 to {MAX_TRIALS:,}, not {value!r}")
    return value


def _flat(table, where: str, name: str, choices: bool = False) -> dict:
    """{"model.d_model": value} from either quoted dotted keys or [name.model] sub-tables."""
    if not isinstance(table, dict):
        raise NslmError(f"{where}: [{name}] must be a table of settings such as \"model.n_layer\"")
    out = {}
    for key, value in table.items():
        if key in SECTIONS and isinstance(value, dict) and not _is_range(value):
            out.update({f"{key}.{f}": v for f, v in value.items()})
        else:
            out[key] = value
    for key in out:
        if not (choices and key in RUN_CHOICES):
            _check_setting_name(key, where)
    return out


def _is_range(value) -> bool:
    return isinstance(value, dict) and {"low", "high"} <= set(value)


def _check_setting_name(key: str, where: str) -> None:
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name:
        raise NslmError(f"{where}: unknown setting {key!r}; settings are model.<field> or train.<field> "
                        f"({' and '.join(RUN_CHOICES)} may be varied as lists)")
    fields = {f.name for f in dataclasses.fields(SECTIONS[section])}
    if name not in fields:
        raise NslmError(f"{where}: unknown setting {key!r}; {section} settings are {', '.join(sorted(fields))}")
    if key in RESERVED:
        raise NslmError(f"{where}: {key} is set by the spec's {RESERVED[key]}, not as a setting")


def _settings(table, where: str, name: str) -> dict:
    return _flat(table, where, name)


def _bundles(table: dict, where: str) -> dict:
    """The grid entries whose values are tables: {entry: {name: settings}}, each table checked as a small grid
    point (its settings known, its data folder recorded absolute)."""
    out = {}
    for key, values in table.items():
        if not (isinstance(values, list) and values and any(isinstance(v, dict) for v in values)):
            continue
        if key in RUN_CHOICES or "." in key:
            raise NslmError(f"{where}: grid {key} lists tables; name a bundle of settings with a plain word such as shape")
        named = {}
        for value in values:
            if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
                raise NslmError(f"{where}: each value of grid {key} must be a table with a name, "
                                f"e.g. {{name = \"deep\", \"model.n_layer\" = 8}}")
            settings = _flat({k: v for k, v in value.items() if k != "name"}, where, f"grid {key}", choices=True)
            if not settings:
                raise NslmError(f"{where}: grid {key} value {value['name']!r} sets nothing")
            for name, setting in settings.items():
                if isinstance(setting, (list, dict)):
                    raise NslmError(f"{where}: grid {key} value {value['name']!r} gives {name} a list or table; "
                                    "give one value")
            _run_choices(settings, where, f"grid {key} value {value['name']!r}", single=True)
            if value["name"] in named:
                raise NslmError(f"{where}: grid {key} names {value['name']!r} twice")
            named[value["name"]] = settings
        out[key] = named
    return out


def _grid(table, where: str, bundles: dict | None = None) -> dict:
    grid = _flat(table, where, "grid", choices=True)
    grid.update({key: list(named) for key, named in (bundles or {}).items()})
    if not grid:
        raise NslmError(f"{where}: the [grid] is empty; give each varied setting a list of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise NslmError(f"{where}: grid {key} must be a non-empty list of values, not {values!r}")
        if len({json.dumps(v) for v in values}) != len(values):
            raise NslmError(f"{where}: grid {key} lists a value twice")
        if any(isinstance(v, (list, dict)) for v in values):
            raise NslmError(f"{where}: grid {key} values must be numbers, text or true/false")
    return _run_choices(grid, where, "grid")


def _run_choices(table: dict, where: str, name: str, *, single: bool = False) -> dict:
    """Varied presets must be names and varied data folders paths (recorded absolute, as `data` is): lists of
    them in a [grid] or [search], one of each in a bundle's table (`single`)."""
    for key in RUN_CHOICES:
        if key not in table:
            continue
        values = [table[key]] if single else table[key]
        what = ("a preset name" if key == "preset" else "a data folder") if single else \
            ("a list of preset names" if key == "preset" else "a list of data folders")
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise NslmError(f"{where}: {name} {key} must be {what}")
        if key == "data":
            values = [str(Path(v).resolve()) for v in values]
        table[key] = values[0] if single else values
    return table


def _search(table, where: str) -> dict:
    search = _flat(table, where, "search", choices=True)
    if not search:
        raise NslmError(f"{where}: the [search] is empty; give each varied setting a range or a list of choices")
    out = {}
    for key, value in search.items():
        if isinstance(value, list):
            if not value or any(isinstance(v, (list, dict)) for v in value):
                raise NslmError(f"{where}: search {key} must be a non-empty list of numbers, text or true/false")
            out[key] = value
            continue
        if not _is_range(value) or set(value) - {"low", "high", "log"}:
            raise NslmError(f"{where}: search {key} must be a list of choices or {{low = A, high = B, log = false}}")
        low, high, log = value["low"], value["high"], value.get("log", False)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high))
        if not numbers or not low < high or not isinstance(log, bool) or (log and low <= 0):
            raise NslmError(f"{where}: search {key} needs numbers low < high (and low > 0 with log = true)")
        out[key] = Range(low, high, log)
    return _run_choices(out, where, "search")


def _measures(table, where: str) -> dict:
    if not isinstance(table, dict):
        raise NslmError(f"{where}: [measures] must be a table: steps = [...], quick = true")
    steps, quick = table.get("steps", []), table.get("quick", True)
    if not isinstance(steps, list) or any(s not in STEP_NAMES for s in steps):
        raise NslmError(f"{where}: measures steps must be a list of nslm eval steps: {', '.join(STEP_NAMES)}")
    if not isinstance(quick, bool):
        raise NslmError(f"{where}: measures quick must be true or false")
    unknown = sorted(set(table) - {"steps", "quick"} - MEASURE_FIELDS)
    if unknown:
        raise NslmError(f"{where}: unknown measures option {unknown[0]!r}; options are {', '.join(sorted(MEASURE_FIELDS))}")
    kinds = {o.field: o.type for o in all_options()}
    for key, value in table.items():
        if key in ("steps", "quick") or key not in kinds:
            continue
        if not _measure_value_ok(key, kinds[key], value):
            wanted = {int: "a whole number of 1 or more", float: "a number above 0", str: "a non-empty string"}
            wanted = "a whole number from 0 to 10" if key == "judge_retries" else wanted.get(kinds[key], kinds[key].__name__)
            raise NslmError(f"{where}: measures {key} must be {wanted}, not {value!r}")
    return dict(table, steps=list(steps), quick=quick)


def _measure_value_ok(key: str, kind: type, value) -> bool:
    """Whether a [measures] value is what `nslm eval all`'s option of that name takes on the command line."""
    if kind is int:
        if key == "judge_retries":
            return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    return isinstance(value, kind) and (not isinstance(value, str) or bool(value.strip()))


def _corners(spec: SweepSpec) -> list[dict]:
    """The settings to check before anything runs: every grid point, or each search choice and range end."""
    if spec.grid:
        return spec.grid_points()
    first = {k: (v.low if isinstance(v, Range) else v[0]) for k, v in spec.search.items()}
    out = [first]
    for key, value in spec.search.items():
        for choice in ([value.high] if isinstance(value, Range) else value[1:]):
            out.append(dict(first, **{key: choice}))
    return out


def _check_runs(spec: SweepSpec, where: str) -> None:
    """Resolve the run settings of the checked points as `nslm train` would, so a bad value stops the sweep
    before its first trial rather than in its tenth."""
    for settings in _corners(spec):
        try:
            resolve_run_config(spec.data_for(settings), spec.preset_for(settings), overrides=spec.overrides(settings),
                               train_options=dict(spec.train_options(), seed=spec.seeds[0]))
        except NslmError as exc:
            shown = ", ".join(f"{k}={v}" for k, v in settings.items())
            raise NslmError(f"{where}: the trial {shown} cannot run: {exc}") from None
