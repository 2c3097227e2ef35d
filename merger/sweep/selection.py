"""Choosing a winner without crowning noise: each candidate's score with a bootstrap confidence interval, and its
gap to the best as an anytime-valid confidence sequence on the items both were scored on (`racing.py`).

`values` is {task: {item id: value}} for one candidate, in the seeded item order. Scores and their intervals are
the tasks' headline metric (what is reported); the order, the gaps and the ties come from the deciding signal
(`select.signal`: the metric itself, or the gold choice's probability), the same numbers racing decided on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from merger.sweep.racing import Racing, Values, score, tasks_of

BOOTSTRAP = 2000
ALPHA = 0.05


def confidence_interval(values: Values, metric: str, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the score (each task's items resampled with replacement)."""
    rng = np.random.default_rng(seed)
    tasks = tasks_of(values, metric)
    total = np.zeros(BOOTSTRAP)
    for task in tasks:
        column = np.array(list(values[task].values()), dtype=float)
        total += column[rng.integers(0, len(column), size=(BOOTSTRAP, len(column)))].mean(axis=1)
    low, high = np.quantile(total / len(tasks), [ALPHA / 2, 1 - ALPHA / 2])
    return float(low), float(high)


@dataclass
class Ranked:
    id: str
    score: float  # the headline metric
    ci: tuple[float, float]
    signal: float  # the deciding signal's score
    gap: tuple[float, float]  # anytime-valid bounds on its signal score minus the best's
    tied_with_best: bool  # not shown worse than the best
    tasks: dict[str, float]
    n_items: int


def order(values: dict[str, Values], metric: str) -> list[str]:
    """Best first: candidates scored on more items (those a race kept going) before the others, then by score."""
    return sorted(values, key=lambda c: (-sum(len(v) for v in values[c].values()), -score(values[c], metric), c))


def rank(
    values: dict[str, Values], metric: str, decided: dict[str, Values] | None = None, racing: Racing | None = None
) -> list[Ranked]:
    """`values`: the headline metric's items; `decided`: the deciding signal's (default: the same)."""
    decided = decided if decided is not None else values
    ids = order(decided, metric)
    racing = racing or Racing(metric, 1 - ALPHA, 0.0, len(ids))
    ranked = []
    for cid in ids:
        v = values[cid]
        gap = (0.0, 0.0) if cid == ids[0] else racing.gap(decided[cid], decided[ids[0]])
        ranked.append(
            Ranked(
                id=cid,
                score=score(v, metric),
                ci=confidence_interval(v, metric),
                signal=score(decided[cid], metric),
                gap=gap,
                tied_with_best=gap[1] >= 0,
                tasks={t: sum(x.values()) / len(x) for t, x in v.items()},
                n_items=sum(len(x) for x in v.values()),
            )
        )
    return ranked


def versus_parents(
    decided: dict[str, Values], parents: dict[str, str], racing: Racing
) -> dict[str, tuple[float, float]]:
    """Each refined child's anytime-valid bounds on its score minus its parent's, on the items both have, by the
    deciding signal; the error is split over the children's comparisons. A child is kept only when its lower
    bound is above 0 (shown better than its parent)."""
    pairs = {c: p for c, p in parents.items() if c in decided and p in decided}
    race = replace(racing, candidates=len(pairs) + 1)
    return {c: race.gap(decided[c], decided[p]) for c, p in pairs.items()}


def never_kept(decided: dict[str, Values], parents: dict[str, str], references: set[str], racing: Racing) -> set[str]:
    """Who can never be best or kept: the input models scored as reference rows, and the refined children not
    shown better than their parent (lower bound of `versus_parents` not above 0; the parent stays eligible)."""
    gaps = versus_parents(decided, parents, racing)
    return set(references) | {c for c, (low, _) in gaps.items() if low <= 0}
