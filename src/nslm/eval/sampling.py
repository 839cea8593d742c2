"""Seeded random slices of an evaluation set, and the standard errors of figures measured on them.

A quick slice must estimate the full figure, so it is a random sample, not the first rows: drawn with
`numpy.random.default_rng(seed)`, stratified by source where the data has sources (each source keeps
its share of the whole set), and returned in file order so that a slice reads like the file.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import numpy as np


def _by_stratum(strata: Sequence[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(strata):
        groups[str(s)].append(i)
    return dict(sorted(groups.items()))


def stratified_sample(strata: Sequence[str], size: int, seed: int) -> list[int]:
    """`size` row indices drawn without replacement, each stratum in proportion to its rows (largest remainder)."""
    groups = _by_stratum(strata)
    total = len(strata)
    if size >= total:
        return list(range(total))
    quotas = {s: size * len(rows) / total for s, rows in groups.items()}
    counts = {s: int(q) for s, q in quotas.items()}
    # Hand the rows left over to the strata with the largest fractional quotas (ties: by name).
    for s in sorted(groups, key=lambda s: (-(quotas[s] - counts[s]), s))[: size - sum(counts.values())]:
        counts[s] += 1
    return per_stratum_sample(strata, counts, seed)


def per_stratum_sample(strata: Sequence[str], counts: dict[str, int] | int, seed: int) -> list[int]:
    """Row indices with `counts[stratum]` (or the same number for every stratum) drawn at random from each."""
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for s, rows in _by_stratum(strata).items():
        k = min(len(rows), counts if isinstance(counts, int) else counts.get(s, 0))
        chosen += [rows[i] for i in rng.choice(len(rows), size=k, replace=False)]
    return sorted(chosen)


def sample_record(strata: Sequence[str], rows: Sequence[int], seed: int, population: int, how: str) -> dict:
    """What results.json keeps about a slice: seed, method, rows per stratum and the row numbers themselves."""
    per: dict[str, int] = defaultdict(int)
    for i in rows:
        per[str(strata[i])] += 1
    return {"seed": seed, "method": how, "rows_drawn": len(rows), "population": population,
            "by_stratum": dict(sorted(per.items())), "rows": [int(i) for i in rows]}


def binomial_se(p: float | None, n: int) -> float | None:
    """Standard error of a proportion `p` measured on `n` independent items."""
    if p is None or n <= 0:
        return None
    return math.sqrt(p * (1 - p) / n)


def mean_se(values: Sequence[float]) -> float | None:
    """Standard error of the mean of `values` (None for fewer than two)."""
    vals = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if len(vals) < 2:
        return None
    return float(vals.std(ddof=1) / math.sqrt(len(vals)))


def ratio_se(numerators: Sequence[float], denominators: Sequence[float]) -> float | None:
    """Standard error of sum(numerators) / sum(denominators) over units (the ratio estimator's linearisation)."""
    y, x = np.asarray(numerators, dtype=np.float64), np.asarray(denominators, dtype=np.float64)
    n = len(y)
    if n < 2 or x.sum() <= 0:
        return None
    r = y.sum() / x.sum()
    return float(math.sqrt(((y - r * x) ** 2).sum() / (n * (n - 1))) / x.mean())


def bootstrap_se(statistic, n: int, seed: int, rounds: int = 200) -> float | None:
    """Standard error of `statistic(rows)` by resampling `n` rows with replacement `rounds` times."""
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, n, size=n)) for _ in range(rounds)]
    return float(np.std(values, ddof=1))
