"""Choosing a winner without crowning noise: scores with bootstrap confidence intervals, and a paired test of
every candidate against the leader on the items both were scored on.

`values` is {task: {item id: value}} for one candidate. The score is the mean over tasks of each task's item mean
(`mean`), or one task's item mean. Bootstrap draws resample each task's items with replacement; a paired draw
applies the same resampled items to both candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOOTSTRAP = 2000
ALPHA = 0.05

Values = dict[str, dict[str, float]]


def _tasks(values: Values, metric: str) -> list[str]:
    return sorted(values) if metric == "mean" else [metric]


def score(values: Values, metric: str) -> float:
    """`mean`: the mean of the tasks' headline metrics (the leaderboard's average); else one task's."""
    tasks = _tasks(values, metric)
    return sum(sum(values[t].values()) / len(values[t]) for t in tasks) / len(tasks)


def _draws(columns: list[dict[str, np.ndarray]], seed: int) -> list[np.ndarray]:
    """BOOTSTRAP resampled scores per candidate; every candidate gets the same item draws (paired)."""
    rng = np.random.default_rng(seed)
    totals = [np.zeros(BOOTSTRAP) for _ in columns]
    tasks = list(columns[0])
    for task in tasks:
        n = len(columns[0][task])
        picks = rng.integers(0, n, size=(BOOTSTRAP, n))
        for total, column in zip(totals, columns):
            total += column[task][picks].mean(axis=1)
    return [total / len(tasks) for total in totals]


def confidence_interval(values: Values, metric: str, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the score."""
    column = {t: np.array([values[t][i] for i in sorted(values[t])], dtype=float) for t in _tasks(values, metric)}
    [draws] = _draws([column], seed)
    low, high = np.quantile(draws, [ALPHA / 2, 1 - ALPHA / 2])
    return float(low), float(high)


def paired_p_value(a: Values, b: Values, metric: str, seed: int = 0) -> float:
    """Two-sided paired bootstrap p-value that a and b score the same, on the items both have."""
    tasks = _tasks(a, metric)
    shared = {t: sorted(set(a[t]) & set(b.get(t, {}))) for t in tasks}
    if not all(shared.values()):
        return 1.0
    columns = [{t: np.array([v[t][i] for i in shared[t]], dtype=float) for t in tasks} for v in (a, b)]
    da, db = _draws(columns, seed)
    diffs = da - db
    below, above = float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0))
    return min(1.0, 2 * min(below, above))


@dataclass
class Ranked:
    id: str
    score: float
    ci: tuple[float, float]
    p_vs_best: float
    tied_with_best: bool
    tasks: dict[str, float]
    n_items: int


def rank(values: dict[str, Values], metric: str) -> list[Ranked]:
    """Best first. Candidates scored on more items rank before those halving eliminated on fewer."""
    order = sorted(values, key=lambda c: (-sum(len(v) for v in values[c].values()), -score(values[c], metric), c))
    best = order[0] if order else None
    ranked = []
    for cid in order:
        v = values[cid]
        p = 1.0 if cid == best else paired_p_value(values[best], v, metric)
        ranked.append(
            Ranked(
                id=cid,
                score=score(v, metric),
                ci=confidence_interval(v, metric),
                p_vs_best=p,
                tied_with_best=p >= ALPHA,
                tasks={t: sum(x.values()) / len(x) for t, x in v.items()},
                n_items=sum(len(x) for x in v.values()),
            )
        )
    return ranked
