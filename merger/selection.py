"""Choosing a winner without crowning noise: scores with bootstrap confidence intervals, and a paired test of
every candidate against the leader on the items both were scored on."""

from __future__ import annotations

import random
from dataclasses import dataclass

BOOTSTRAP = 2000
ALPHA = 0.05


def score(values: dict[str, dict[str, float]], metric: str) -> float:
    """`mean`: the mean of the tasks' headline metrics (the leaderboard's average); else one task's."""
    tasks = sorted(values) if metric == "mean" else [metric]
    return sum(sum(values[t].values()) / len(values[t]) for t in tasks) / len(tasks)


def _resample(values: dict[str, dict[str, float]], items: dict[str, list[str]], rnd: random.Random,
              metric: str, others: list[dict[str, dict[str, float]]] = ()) -> list[float]:
    """One bootstrap draw over each task's items, applied to this candidate and, paired, to the others."""
    picks = {t: [rnd.choice(ids) for _ in ids] for t, ids in items.items()}
    out = []
    for v in [values, *others]:
        out.append(score({t: {str(i): v[t][item] for i, item in enumerate(picks[t])} for t in picks}, metric))
    return out


def confidence_interval(values: dict[str, dict[str, float]], metric: str, seed: int = 0) -> tuple[float, float]:
    tasks = sorted(values) if metric == "mean" else [metric]
    items = {t: sorted(values[t]) for t in tasks}
    rnd = random.Random(seed)
    draws = sorted(_resample(values, items, rnd, metric)[0] for _ in range(BOOTSTRAP))
    return draws[int(BOOTSTRAP * ALPHA / 2)], draws[int(BOOTSTRAP * (1 - ALPHA / 2)) - 1]


def paired_p_value(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]], metric: str,
                   seed: int = 0) -> float:
    """Two-sided paired bootstrap p-value that a and b score the same, on the items both have."""
    tasks = sorted(a) if metric == "mean" else [metric]
    items = {t: sorted(set(a[t]) & set(b[t])) for t in tasks}
    if not all(items.values()):
        return 1.0
    rnd = random.Random(seed)
    diffs = [x - y for x, y in (_resample(a, items, rnd, metric, [b]) for _ in range(BOOTSTRAP))]
    below = sum(d <= 0 for d in diffs) / BOOTSTRAP
    above = sum(d >= 0 for d in diffs) / BOOTSTRAP
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


def rank(values: dict[str, dict[str, dict[str, float]]], metric: str) -> list[Ranked]:
    """Best first. Candidates scored on more items rank before those halving eliminated on fewer."""
    order = sorted(values, key=lambda c: (-sum(len(v) for v in values[c].values()), -score(values[c], metric), c))
    best = order[0] if order else None
    ranked = []
    for cid in order:
        v = values[cid]
        p = 1.0 if cid == best else paired_p_value(values[best], v, metric)
        ranked.append(Ranked(id=cid, score=score(v, metric), ci=confidence_interval(v, metric), p_vs_best=p,
                             tied_with_best=p >= ALPHA, tasks={t: sum(x.values()) / len(x) for t, x in v.items()},
                             n_items=sum(len(x) for x in v.values())))
    return ranked
