"""Choosing a winner without crowning noise: each candidate's score with a bootstrap confidence interval, and its
gap to the best as a paired interval on the items both were scored on: a fixed-n paired bootstrap, since the items a
ranking reads are fixed before any is scored (a budget's rungs, a grid's limit). Racing's stops, which look again
and again, use the anytime-valid sequences of `racing.py` instead, and say so where they are shown.

`values` is {task: {item id: value}} for one candidate, in the seeded item order. Scores and their intervals are
the tasks' headline metric (what is reported); the order, the gaps and the ties come from the deciding signal
(`select.signal`: the metric itself, or the gold choice's probability), the same numbers racing decided on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from merger.sweep.racing import Racing, Values, differences, score, tasks_of

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
    gap: tuple[float, float]  # paired interval of its signal score minus the best's, on the items both have
    tied_with_best: bool  # not shown worse than the best (the paired interval reaches 0), on as many items
    tasks: dict[str, float]
    n_items: int


def paired_interval(a: Values, b: Values, metric: str, level: float = 1 - ALPHA, seed: int = 0) -> tuple[float, float]:
    """Percentile paired bootstrap interval of score(a) - score(b) on the items both have: each task's items
    resampled with replacement, the same draws for both, the tasks' mean differences averaged as the score is."""
    rng = np.random.default_rng(seed)
    total, tasks = np.zeros(BOOTSTRAP), 0
    for z in differences(a, b, metric).values():
        total += z[rng.integers(0, len(z), size=(BOOTSTRAP, len(z)))].mean(axis=1)
        tasks += 1
    if not tasks:
        return -1.0, 1.0
    low, high = np.quantile(total / tasks, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def tiebreak(cid: str, seed: int) -> str:
    """The last word between candidates tied on everything else: a hash of the eval seed and the id, so no
    spelling of ids is favoured and a replay with the same seed breaks ties the same way."""
    return hashlib.sha256(f"{seed}:{cid}".encode()).hexdigest()


def order(
    values: dict[str, Values],
    metric: str,
    prob: dict[str, Values] | None = None,
    seed: int = 0,
    estimate: Callable[[Values], float] | None = None,
) -> list[str]:
    """Best first: candidates scored on more items (those a race or a halving kept going) before the others, then
    by score (or by `estimate`, a whole-file estimate from the items: `strata.Strata.score`); ties by the mean
    gold-choice probability on the same items (`prob`, where known), then `tiebreak`."""
    prob = prob or {}
    estimate = estimate or (lambda v: score(v, metric))

    def key(c: str):
        known = prob.get(c, {})
        same = {t: [known[t][i] for i in values[c][t] if i in known.get(t, {})] for t in tasks_of(values[c], metric)}
        p = np.mean([np.mean(x) for x in same.values() if x]) if any(same.values()) else 0.0
        return (-sum(len(v) for v in values[c].values()), -estimate(values[c]), -p, tiebreak(c, seed))

    return sorted(values, key=key)


def n_items(values: Values) -> int:
    return sum(len(x) for x in values.values())


def rank(
    values: dict[str, Values],
    metric: str,
    decided: dict[str, Values] | None = None,
    racing: Racing | None = None,
    prob: dict[str, Values] | None = None,
    seed: int = 0,
) -> list[Ranked]:
    """`values`: the headline metric's items; `decided`: the deciding signal's (default: the same); `prob`: the
    gold-choice probabilities that break ties."""
    decided = decided if decided is not None else values
    ids = order(decided, metric, prob, seed)
    level = racing.confidence if racing is not None else 1 - ALPHA
    ranked = []
    for cid in ids:
        v = values[cid]
        gap = (0.0, 0.0) if cid == ids[0] else paired_interval(decided[cid], decided[ids[0]], metric, level)
        ranked.append(
            Ranked(
                id=cid,
                score=score(v, metric),
                ci=confidence_interval(v, metric),
                signal=score(decided[cid], metric),
                gap=gap,
                tied_with_best=gap[1] >= 0 and n_items(v) >= n_items(values[ids[0]]),  # a cut one is not tied
                tasks={t: sum(x.values()) / len(x) for t, x in v.items()},
                n_items=n_items(v),
            )
        )
    return ranked


def versus_parents(
    decided: dict[str, Values], parents: dict[str, str], racing: Racing
) -> dict[str, tuple[float, float]]:
    """Each refined child's anytime-valid lower bound on its score minus its parent's, on the items both have, by the
    deciding signal (one-sided: only the lower bound is read; the upper one shown beside it is the same sequence's);
    the error is split over the children's comparisons. A child is kept only when its lower bound is above 0 (shown
    better than its parent)."""
    pairs = {c: p for c, p in parents.items() if c in decided and p in decided}
    race = replace(racing, candidates=len(pairs) + 1)
    return {c: race.gap(decided[c], decided[p], sides=1) for c, p in pairs.items()}


def never_kept(decided: dict[str, Values], parents: dict[str, str], references: set[str], racing: Racing) -> set[str]:
    """Who can never be best or kept: the input models scored as reference rows, and the refined children not
    shown better than their parent (lower bound of `versus_parents` not above 0; the parent stays eligible)."""
    gaps = versus_parents(decided, parents, racing)
    return set(references) | {c for c, (low, _) in gaps.items() if low <= 0}
