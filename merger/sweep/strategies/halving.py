"""`halving`: successive halving. Every candidate on the first rung's items, the best 1/eta of them on eta times
as many, and so on up to `eval.limit` (or until one is left). With `select.race`, each rung is also a
look of the race (`racing.py`): a candidate shown worse than the leader stops there, and a settled race (the
leader within delta of every other) ends the sweep. `grid` is this class keeping every candidate not shown worse.

Rung k's survivors are decided once every survivor of rung k-1 has been scored there, from the journal's items,
so the outcome does not depend on the order in which results arrive, nor on how many workers there are. Workers
are not kept waiting at a rung, ASHA-style: while a rung is being scored, an idle worker promotes a candidate
that is already in the top 1/eta of the rung's results so far and scores it on the next rung. When the rung is
decided, a promotion it confirms is already done; one it does not is left out of the ranking, which counts each
candidate's items only up to the rung it was decided into.
"""

from __future__ import annotations

import math

from merger.config.recipe import SelectSettings
from merger.sweep.racing import Racing
from merger.sweep.selection import order
from merger.sweep.strategies.base import Goal, ValuesOf, rungs, slice_goal


class Halving:
    def __init__(
        self, ids: list[str], select: SelectSettings, limit: int, values: ValuesOf, racing: Racing | None, cut=True
    ):
        self.eta, self.metric, self.values, self.racing, self.cut = select.eta, select.metric, values, racing, cut
        self.rungs = rungs(select.min_items, select.eta, limit)
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
            best = order({cid: self.values(cid, self.rungs[k]) for cid in scored}, self.metric)
            for cid in best[: len(scored) // self.eta if self.cut else len(scored)]:
                if (cid, k + 1) not in self.asked and len(goals) < idle:
                    goals.append(self._goal(cid, k + 1))
        return goals

    def _decide(self, k: int) -> None:
        """Rung k is scored: who goes on to rung k + 1, or the race is settled here."""
        values = {cid: self.values(cid, self.rungs[k]) for cid in self.alive[k]}
        going = order(values, self.metric)
        if self.racing is not None:
            verdict = self.racing.look(values)
            going = [cid for cid in going if cid not in verdict.worse]
            if verdict.settled or len(going) == 1:
                self.settled = True
                return
        self.alive.append(going[: self._keep(self.alive[k])])

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


def make(ids: list[str], select: SelectSettings, limit: int | None, values: ValuesOf, racing: Racing) -> Halving:
    return Halving(ids, select, limit, values, racing if select.race else None)
