"""The ask/tell interface between a strategy and the driver.

The driver asks for goals, reaches each (running whatever units it takes, on whichever workers), and tells the
strategy when one is reached. A strategy reads scores only through `values`, which reads the journal, so a resumed
sweep replays every decision from what was recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from merger.flow.plan import Goal
from merger.sweep.racing import Values

ValuesOf = Callable[[str, int | None], Values]  # (candidate id, only the first n items of each task or all) -> values
Estimate = Callable[[Values], float]  # a candidate's whole-file score estimated from its values (`strata.Strata`)


@dataclass(frozen=True)
class Scores:
    """What a strategy reads to rank candidates, in one object: the deciding values; the gold-choice probabilities
    and the eval seed that break ties (`selection.order`); a whole-file estimate that ranks them instead of their
    mean (`strata.Strata`), when the sweep has one."""

    values: ValuesOf
    prob: ValuesOf | None = None
    seed: int = 0
    estimate: Estimate | None = None


def rungs(min_items: int | None, eta: int, limit: int) -> list[int]:
    """Items per task after each slice: `min_items` (default limit / eta^2), eta times as many, ..., `limit`."""
    found = [min(limit, min_items or max(1, limit // eta**2))]
    while found[-1] < limit:
        found.append(min(limit, found[-1] * eta))
    return found


def slice_goal(cid: str, rungs: list[int], k: int, candidate: Any = None) -> Goal:
    """Rung k's new items for a candidate: [rungs[k - 1], rungs[k]) of the selection order."""
    start = rungs[k - 1] if k else 0
    return Goal(cid, offset=start, limit=rungs[k] - start, candidate=candidate)


class Strategy(Protocol):
    def ask(self, idle: int) -> list[Goal]:
        """Goals that may start now and were not asked before; `idle` workers have nothing else to do."""

    def tell(self, goal: Goal) -> None:
        """`goal` was reached (its scores are in the journal)."""

    def finished(self) -> bool: ...

    def counted(self) -> dict[str, int | None]:
        """Per candidate, how many leading selection items of each task count in the ranking (None: all)."""


class Fixed:
    """Given goals, all at once: a grid, the winner's report items, the kept candidates' weights."""

    def __init__(self, goals: list[Goal]):
        self.todo, self.left = list(goals), set(goals)
        self.ids = list(dict.fromkeys(g.cid for g in goals))

    def ask(self, idle: int) -> list[Goal]:
        asked, self.todo = self.todo, []
        return asked

    def tell(self, goal: Goal) -> None:
        self.left.discard(goal)

    def finished(self) -> bool:
        return not self.left

    def counted(self) -> dict[str, int | None]:
        return dict.fromkeys(self.ids)
