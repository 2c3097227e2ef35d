"""`halving`: budgeted successive halving, the fixed-budget best-arm rule (Karnin, Koren & Somekh, ICML 2013).
Every candidate on the first rung's items, the best 1/eta of them (rounded up) on eta times as many, and so on
until eta or fewer remain: those see the last rung, more than half of what the budget allows per task. The rung
sizes come from `select.budget` (`schedule`): the largest last rung L whose item evaluations fit in budget x K
candidates x the smallest task's items within `eval.limit` (what a grid would score), `eval.limit` capping L. At
each rung the survivors are ranked on their first n_j items of each task's seeded order (`selection.order`: the
deciding signal, then the gold choice's probability, then a hash of the eval seed and the id). With `select.race`,
each rung is also a look of the race (`racing.py`): a candidate shown worse than the leader stops there, and a
settled race ends the sweep. `grid` is this class keeping every candidate not shown worse, on racing's rungs
(`base.rungs`).

Rung k's survivors are decided once every survivor of rung k-1 has been scored there, from the journal's items,
so the outcome does not depend on the order in which results arrive, nor on how many workers there are. Workers
are not kept waiting at a rung, ASHA-style: while a rung is being scored, an idle worker promotes a candidate
that is already in the top 1/eta of the rung's results so far and scores it on the next rung. When the rung is
decided, a promotion it confirms is already done; one it does not is left out of the ranking, which counts each
candidate's items only up to the rung it was decided into.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from merger.config.recipe import SelectSettings
from merger.sweep.racing import Racing
from merger.sweep.selection import order
from merger.sweep.strategies.base import Fixed, Goal, Scores, Strategy, slice_goal


@dataclass(frozen=True)
class Schedule:
    """Budgeted halving's rungs, fixed before any item is scored."""

    survivors: list[int]  # S_j: candidates scored at rung j (S_0 = K, S_j+1 = ceil(S_j / eta))
    items: list[int]  # n_j: items per task after rung j (each task capped at its own size)
    allowed: int  # item evaluations the budget allows, per task: budget x K x the smallest task's items

    @property
    def cost(self) -> int:
        """Item evaluations per task: each rung's survivors on its new items."""
        return cost(self.survivors, self.items)


def cost(survivors: list[int], items: list[int]) -> int:
    return sum(s * (n - m) for s, n, m in zip(survivors, items, [0, *items]))


def schedule(k: int, budget: float, smallest: int, cap: int, eta: int = 2) -> Schedule | None:
    """The rungs for K candidates: n_j = floor(L / eta^(J - j)), L the largest whole number whose cost fits in
    budget x K x `smallest` and at most `cap` (eval.limit, or the largest task); None when not even one item at the
    first rung fits."""
    survivors = [k]
    while survivors[-1] > eta:
        survivors.append(math.ceil(survivors[-1] / eta))
    steps = len(survivors) - 1
    allowed = int(budget * k * smallest)
    items = lambda last: [last // eta ** (steps - j) for j in range(steps + 1)]  # noqa: E731
    low, high = eta**steps, cap  # cost grows with L: the largest L that fits, by bisection
    if low > high or cost(survivors, items(low)) > allowed:
        return None
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if cost(survivors, items(mid)) <= allowed else (low, mid - 1)
    return Schedule(survivors, items(low), allowed)


class Halving:
    def __init__(
        self,
        ids: list[str],
        select: SelectSettings,
        rungs: list[int],
        scores: Scores,
        racing: Racing | None,
        cut: bool = True,
    ):
        self.eta, self.metric, self.scores, self.racing, self.cut = select.eta, select.metric, scores, racing, cut
        self.rungs = rungs
        self.alive = [list(ids)]  # alive[k]: the candidates decided into rung k
        self.reached: dict[str, set[int]] = {cid: set() for cid in ids}
        self.asked: set[tuple[str, int]] = set()
        self.settled = False  # the race ended before the last rung

    def _goal(self, cid: str, k: int) -> Goal:
        self.asked.add((cid, k))
        return slice_goal(cid, self.rungs, k)

    def _last(self, k: int) -> bool:
        return self.settled or k == len(self.rungs) - 1 or len(self.alive[k]) == 1

    def _keep(self, ids: list[str]) -> int:
        return max(1, math.ceil(len(ids) / self.eta)) if self.cut else len(ids)

    def ask(self, idle: int) -> list[Goal]:
        k = len(self.alive) - 1
        goals = [self._goal(cid, k) for cid in self.alive[k] if (cid, k) not in self.asked]
        if idle > len(goals) and not self._last(k):  # speculate: promote early from the results so far
            scored = [cid for cid in self.alive[k] if k in self.reached[cid]]
            best = self._order(scored, self.rungs[k])
            for cid in best[: len(scored) // self.eta if self.cut else len(scored)]:
                if (cid, k + 1) not in self.asked and len(goals) < idle:
                    goals.append(self._goal(cid, k + 1))
        return goals

    def _decide(self, k: int) -> None:
        """Rung k is scored: who goes on to rung k + 1, or the race is settled here."""
        values = {cid: self.scores.values(cid, self.rungs[k]) for cid in self.alive[k]}
        going = self._order(self.alive[k], self.rungs[k], values)
        if self.racing is not None:
            verdict = self.racing.look(values)
            going = [cid for cid in going if cid not in verdict.worse]
            if verdict.settled or len(going) == 1:
                self.settled = True
                return
        self.alive.append(going[: self._keep(self.alive[k])])

    def _order(self, ids: list[str], below: int, values=None) -> list[str]:
        s = self.scores
        values = values or {cid: s.values(cid, below) for cid in ids}
        prob = {cid: s.prob(cid, below) for cid in ids} if s.prob is not None else None
        return order(values, self.metric, prob, s.seed, s.estimate)

    def tell(self, goal: Goal) -> None:
        self.reached[goal.cid].add(next(k for k in range(len(self.rungs)) if goal.offset + goal.limit == self.rungs[k]))
        k = len(self.alive) - 1
        while not self._last(k) and all(k in self.reached[cid] for cid in self.alive[k]):
            self._decide(k)
            k = len(self.alive) - 1

    def finished(self) -> bool:
        k = len(self.alive) - 1
        return self._last(k) and all(k in self.reached[cid] for cid in self.alive[k])

    def counted(self) -> dict[str, int | None]:
        counted: dict[str, int | None] = {}
        for k, ids in enumerate(self.alive):
            counted.update({cid: self.rungs[k] for cid in ids})
        return counted


def make(ids: list[str], select: SelectSettings, limit: int | None, scores: Scores, racing: Racing) -> Strategy:
    """Halving on the budget's schedule; the task sizes come from the race's (`Racing.sizes`: the journal's). One
    candidate has nothing to be told apart from: it is scored on every item, as a grid would."""
    if len(ids) < 2:
        return Fixed([Goal(cid, limit=limit) for cid in ids])
    found = schedule_for(len(ids), select, racing.sizes(), limit)
    return Halving(ids, select, found.items, scores, racing if select.race else None)


def schedule_for(k: int, select: SelectSettings, sizes: dict[str, int], limit: int | None) -> Schedule:
    """`schedule` for K candidates on tasks of these sizes, the budget counted on the smallest task's items within
    eval.limit (a grid with the same eval settings spends budget 1); ValueError when the budget is too small."""
    smallest = min(min(sizes.values()), limit or max(sizes.values()))
    found = schedule(k, select.budget, smallest, limit or max(sizes.values()), select.eta)
    if found is None:
        raise ValueError(f"{select.budget:g} cannot give {k} candidates one item of each task at the first rung")
    return found
