"""The one stop rule every strategy races with (grid, halving, and a search's paired pruner).

Candidates are scored on growing slices of the same seeded items. After a slice, the paired difference between
a candidate and the leader (the best scored on the same items, by the deciding signal) gets an anytime-valid
confidence sequence (`sequential.py`) over the item positions, each position's difference averaged over the
tasks. A candidate whose sequence lies below zero is shown worse and stops. The race is settled once every
remaining candidate's sequence lies below the leader's score plus `delta`: the leader is within delta of every
candidate still running, and every candidate that stopped was shown worse than one that was running.

Confidence: both claims a race makes, that the best candidate (the one best on the whole files) is never shown
worse, and that a settled leader is within delta of it, fail only when a sequence comparing the best with another
candidate misses. So each comparison gets (1 - confidence) / (candidates - 1) of error (Bonferroni over the pairs
the best is in), and a confidence sequence keeps its level however often it is looked at: the whole race holds at
`confidence`. Both claims read one side of a sequence (its upper bound), so the one-sided constant applies.

The gap is the score's: the mean over tasks of each task's mean difference. Each task gets its own sequence over
its own items, drawn without replacement from its own file (a finite population of its size), at the
comparison's error split over the tasks; the gap's bounds are the mean of the tasks' bounds, which all hold
together. A short task and a long one weigh the same, as they do in the score.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from merger.sweep.sequential import confidence_sequence

Values = dict[str, dict[str, float]]  # task -> item id -> value, in the seeded order


def tasks_of(values: Values, metric: str) -> list[str]:
    return sorted(values) if metric == "mean" else [metric]


def score(values: Values, metric: str) -> float:
    """`mean`: the mean of the tasks' item means (the leaderboard's average); else one task's item mean."""
    tasks = tasks_of(values, metric)
    return sum(sum(values[t].values()) / len(values[t]) for t in tasks) / len(tasks)


def differences(a: Values, b: Values, metric: str) -> dict[str, np.ndarray]:
    """Per task, a - b item by item on the items both have, in a's (the seeded) order: the score's difference is
    the mean over these tasks of each one's mean."""
    columns = {t: np.array([a[t][i] - b[t][i] for i in a[t] if i in b[t]], dtype=float) for t in tasks_of(a, metric)}
    return {t: c for t, c in columns.items() if t in b and len(c)}


@dataclass
class Verdict:
    """A look at the race: its leader, who is shown worse, and whether it is settled."""

    leader: str
    worse: list[str] = field(default_factory=list)
    settled: bool = False


@dataclass
class Racing:
    metric: str  # 'mean' or a task
    confidence: float
    delta: float  # points
    candidates: int  # how many may race: the best's comparisons with the others share the error
    sizes: Callable[[], dict[str, int]] = dict  # task -> items in its file, when known
    _sizes: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    @property
    def alpha(self) -> float:
        return (1 - self.confidence) / max(1, self.candidates - 1)

    def gap(self, a: Values, b: Values, sides: int = 2) -> tuple[float, float]:
        """Anytime-valid bounds on score(a) - score(b) over the items both have (values in [0, 1]; any other range
        gives no bounds). `sides=1`: the caller reads one bound, which then holds alone at the race's level."""
        columns = differences(a, b, self.metric)
        if not columns or not all(0 <= v <= 1 for t in columns for v in (*a[t].values(), *b[t].values())):
            return -1.0, 1.0
        sizes = self._sizes or self.sizes()  # read once it is known: files do not change size during a race
        self._sizes = sizes
        bounds = [
            confidence_sequence(
                z, self.alpha / len(columns), sizes[t] if sizes.get(t, 0) >= len(z) else None, sides=sides
            )
            for t, z in columns.items()
        ]
        return float(np.mean([low for low, _ in bounds])), float(np.mean([high for _, high in bounds]))

    def earliest(self) -> int:
        """The fewest items on which any candidate could be shown worse (every one of them lost): a race looks no
        sooner (with 8 candidates at 95%, 32 items)."""
        n = 1
        while n < 100_000 and confidence_sequence([-1.0] * n, self.alpha, sides=1)[1] >= 0:
            n += 1
        return n

    def leader(self, values: dict[str, Values]) -> str:
        return min(values, key=lambda c: (-score(values[c], self.metric), c))

    def look(self, values: dict[str, Values]) -> Verdict:
        """Candidates scored on the same items: the leader, who is shown worse than it, and whether it is within
        delta of every other."""
        leader = self.leader(values)
        verdict = Verdict(leader)
        uppers = {}
        for cid in values:
            if cid != leader:
                uppers[cid] = self.gap(values[cid], values[leader], sides=1)[1]
                if uppers[cid] < 0:
                    verdict.worse.append(cid)
        verdict.settled = all(u <= self.delta / 100 for u in uppers.values())
        return verdict


def racing_for(select, candidates: int, sizes: Callable[[], dict[str, int]] = dict) -> Racing:
    """The race a sweep's `select:` settings describe, among `candidates`."""
    return Racing(select.metric, select.confidence, select.delta, candidates, sizes)
