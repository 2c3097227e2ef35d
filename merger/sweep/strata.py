"""Parent post-stratification: a candidate's whole-file score estimated from a few items, using what its two parents
did on every item of the files.

Merges of two parents tend to get right what both parents get right and wrong what both get wrong; the items where
the parents disagree are where siblings differ. With both parents' whole-file records at hand (the per-item cache
holds them once they were scored, and they are never paid for inside the budget), each task's items fall into four
strata by the parents' headline metric (both right, only A, only B, neither), with weights W_h, the share of the
whole file in each. A candidate scored on some items is estimated as sum_h W_h * mean_h, mean_h its mean over the
items scored in stratum h; a stratum with no item scored yet falls back to the candidate's plain mean.

`scripts/bench_selection.py --parents A,B` replays budgeted halving ranked by this estimate (`Scores.estimate`).
On the selection study it did not pick better than the plain mean (P(regret <= 1) 0.99 against 0.98 at a fifth of
the items, 0.90 against 0.91 at a tenth, over 1,000 replays), so sweeps do not use it; the replay stays to measure
it on other sibling sets.
"""

from __future__ import annotations

from dataclasses import dataclass

from merger.sweep.racing import Values, tasks_of

STRATA = 4


def stratum(a: float, b: float) -> int:
    """3: both parents right, 2: only A, 1: only B, 0: neither (a value of at least 0.5 counts as right)."""
    return 2 * (a >= 0.5) + (b >= 0.5)


@dataclass
class Strata:
    of: dict[str, dict[str, int]]  # task -> item id -> its stratum
    weights: dict[str, list[float]]  # task -> W_h, the share of the task's whole file in each stratum

    @classmethod
    def from_parents(cls, a: Values, b: Values) -> Strata:
        """From both parents' headline values on the whole files (tasks and items both have)."""
        of, weights = {}, {}
        for task in set(a) & set(b):
            items = [i for i in a[task] if i in b[task]]
            of[task] = {i: stratum(a[task][i], b[task][i]) for i in items}
            counts = [0] * STRATA
            for h in of[task].values():
                counts[h] += 1
            weights[task] = [n / len(items) for n in counts] if items else [0.0] * STRATA
        return cls(of, weights)

    def task_score(self, task: str, values: dict[str, float]) -> float:
        plain = sum(values.values()) / len(values)
        if task not in self.of:
            return plain
        sums, counts = [0.0] * STRATA, [0] * STRATA
        for item, value in values.items():
            h = self.of[task].get(item)
            if h is None:
                continue
            sums[h] += value
            counts[h] += 1
        return sum(w * (sums[h] / counts[h] if counts[h] else plain) for h, w in enumerate(self.weights[task]))

    def score(self, values: Values, metric: str) -> float:
        """The post-stratified estimate of `racing.score`: each task's, averaged as the score averages them."""
        tasks = tasks_of(values, metric)
        return sum(self.task_score(t, values[t]) for t in tasks) / len(tasks)
