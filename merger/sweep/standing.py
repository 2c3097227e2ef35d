"""One ranking of a sweep's candidates, from the journal: the driver reads it to pick refine parents and the winner,
the reports to draw the leaderboard. Each candidate counted on its selection items (those its rank counts), the
race's error split over the candidates it started with (journaled when it starts)."""

from __future__ import annotations

from dataclasses import dataclass, field

from merger.config.recipe import SelectSettings
from merger.config.results import SweepCandidate
from merger.sweep.journal import Journal
from merger.sweep.racing import Racing, Values, racing_for
from merger.sweep.selection import Ranked, never_kept, rank, versus_parents

RACE = "race_candidates"  # the journal meta key holding the race's candidate count


@dataclass
class Standing:
    journal: Journal
    select: SelectSettings
    candidates: dict[str, SweepCandidate]  # id -> where it came from (parent, reference)
    counted: dict[str, int | None] = field(default_factory=dict)  # id -> leading items its rank counts (None: all)
    seed: int = 0  # the eval seed: the last word on ties (`selection.tiebreak`)

    def racing(self) -> Racing:
        count = self.journal.meta(RACE) or len(self.candidates)
        return racing_for(self.select, count, self.journal.task_sizes)

    def values(self, signal: str = "metric") -> dict[str, Values]:
        found = {cid: self.journal.item_values(cid, "select", self.counted.get(cid), signal) for cid in self.candidates}
        return {cid: v for cid, v in found.items() if v}

    def ranked(self, decided: dict[str, Values] | None = None) -> list[Ranked]:
        """`decided`: the values by the deciding signal, when the caller has read them already."""
        decided = self.values(self.select.signal) if decided is None else decided
        return rank(self.values(), self.select.metric, decided, self.racing(), self.values("auto"), self.seed)

    def parents(self) -> dict[str, str]:
        return {cid: c.parent for cid, c in self.candidates.items() if c.parent}

    def eligible(self) -> list[Ranked]:
        """The ranking without those never kept (`selection.never_kept`)."""
        references = {cid for cid, c in self.candidates.items() if c.reference}
        decided = self.values(self.select.signal)  # read once for both the rule and the ranking
        out = never_kept(decided, self.parents(), references, self.racing())
        return [r for r in self.ranked(decided) if r.id not in out]

    def versus(self) -> dict[str, tuple[float, float]]:
        """Each refined child's bounds against its parent (`selection.versus_parents`)."""
        return versus_parents(self.values(self.select.signal), self.parents(), self.racing())
