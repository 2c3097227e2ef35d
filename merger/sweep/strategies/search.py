"""`search:`: Optuna proposes points (TPE, CMA-ES or random, through its ask/tell interface); each point is a
candidate with its content-hash id, raced on growing slices of the same seeded items.

Racing: a trial is scored on `min_items`, then eta times as many, up to `eval.limit`. After each slice it stops
(Optuna hears PRUNED) when the race's stop rule (`racing.py`: an anytime-valid confidence sequence on the items both
have, at `select.confidence` shared by the trials' comparisons) shows it worse than the leader (the best trial scored
on every item), or when Optuna's successive-halving pruner says so (`pruner: halving`). A point proposed again
is told its earlier outcome without new work.

The journal is the only source of truth: every ask and tell is journaled in order (`trials`), and a resumed search
replays them into a fresh sampler with the same seed, so it goes on with the proposals it would have made.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from merger.config.recipe import Candidate, Dimension, SearchSettings
from merger.config.results import SearchSummary
from merger.core.errors import UserError
from merger.sweep.journal import Journal
from merger.sweep.racing import Racing, score
from merger.sweep.strategies.base import Goal, ValuesOf, rungs, slice_goal


def distribution(dim: Dimension):
    """Optuna's distribution for a dimension; choices are proposed by index (any YAML value can be a choice)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if dim.choices is not None:
        return CategoricalDistribution(list(range(len(dim.choices))))
    return FloatDistribution(dim.low, dim.high, step=dim.step, log=dim.log)


def sampler(settings: SearchSettings):
    from optuna.samplers import CmaEsSampler, RandomSampler, TPESampler

    if settings.sampler == "tpe":
        return TPESampler(seed=settings.seed)
    if settings.sampler == "cmaes":
        return CmaEsSampler(seed=settings.seed, warn_independent_sampling=False)
    return RandomSampler(seed=settings.seed)


@dataclass
class Race:
    candidate: Candidate
    trials: list[int]  # the trials that proposed this candidate
    rung: int = 0


@dataclass
class Outcome:
    state: str  # complete | pruned
    value: float
    items: int


@dataclass
class Search:
    settings: SearchSettings
    space: dict[str, Dimension]
    limit: int
    metric: str
    propose: Callable[[dict[str, Any]], Candidate]
    values: ValuesOf
    journal: Journal
    rule: Racing  # the stop rule every strategy races with
    rungs: list[int] = field(init=False)
    queue: list[Goal] = field(default_factory=list)
    racing: dict[str, Race] = field(default_factory=dict)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    leader: tuple[str, float] | None = None

    def __post_init__(self):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        s = self.settings
        self.rungs = [self.limit] if s.pruner == "none" else rungs(s.min_items, s.eta, self.limit)
        self.dists = {path: distribution(dim) for path, dim in self.space.items()}
        pruner = (
            optuna.pruners.SuccessiveHalvingPruner(min_resource=self.rungs[0], reduction_factor=self.settings.eta)
            if self.settings.pruner == "halving"
            else optuna.pruners.NopPruner()
        )
        self.study = optuna.create_study(direction="maximize", sampler=sampler(self.settings), pruner=pruner)
        self.trials: dict[int, Any] = {}
        self.reported: dict[int, set[int]] = {}
        self._replay()

    # the sampler's point <-> the recipe's values --------------------------------------------------
    def _params(self, trial) -> dict[str, Any]:
        return {
            path: (dim.choices[trial.params[path]] if dim.choices is not None else trial.params[path])
            for path, dim in self.space.items()
        }

    def _ask(self) -> tuple[int, dict[str, Any]]:
        trial = self.study.ask(self.dists)
        self.trials[trial.number] = trial
        return trial.number, self._params(trial)

    def _report(self, number: int, value: float, items: int) -> None:
        """A trial's score after a slice, once (Optuna warns of a step reported twice)."""
        if items not in self.reported.setdefault(number, set()):
            self.trials[number].report(value, items)
            self.reported[number].add(items)

    def _tell_sampler(self, number: int, cid: str, outcome: Outcome) -> None:
        """What the sampler hears of a trial: its score after each slice, then complete or pruned."""
        import optuna

        trial = self.trials[number]
        for n in self.rungs:
            if n <= outcome.items:
                self._report(number, score(self.values(cid, n), self.metric), n)
        if outcome.state == "complete":
            self.study.tell(trial, outcome.value)
            if self.leader is None or outcome.value > self.leader[1]:
                self.leader = (cid, outcome.value)
        else:
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)

    def _replay(self) -> None:
        """Every journaled ask and tell, in order, into the fresh sampler; trials asked but never told race again."""
        rows = self.journal.trials()
        events = sorted([(r.asked, 0, r) for r in rows] + [(r.told, 1, r) for r in rows if r.told is not None])
        for _, told, row in events:
            if told:
                outcome = Outcome(row.state, row.value, row.items)
                self.outcomes[row.candidate] = outcome
                self._tell_sampler(row.number, row.candidate, outcome)
                continue
            number, params = self._ask()
            if number != row.number or json.dumps(params, sort_keys=True) != json.dumps(row.params, sort_keys=True):
                raise UserError.one(
                    str(self.journal.folder / "journal.sqlite"),
                    "search",
                    f"the sampler no longer proposes trial {row.number}'s point {row.params} (it proposes {params}); "
                    "was the search changed, or Optuna upgraded? Start over with --fresh",
                )
        for row in rows:
            if row.told is None:
                self._race(row.number, self.propose(row.params))

    # racing ---------------------------------------------------------------------------------------
    def _goal(self, race: Race) -> Goal:
        return slice_goal(race.candidate.id, self.rungs, race.rung, race.candidate)

    def _race(self, number: int, candidate: Candidate) -> None:
        if candidate.id in self.outcomes:  # a point seen before: its outcome, no new work
            self._told(number, candidate.id, self.outcomes[candidate.id])
        elif candidate.id in self.racing:
            self.racing[candidate.id].trials.append(number)
        else:
            self.racing[candidate.id] = race = Race(candidate, [number])
            self.queue.append(self._goal(race))

    def _told(self, number: int, cid: str, outcome: Outcome) -> None:
        self._tell_sampler(number, cid, outcome)
        self.journal.tell_trial(number, outcome.state, outcome.value, outcome.items)

    def _behind(self, race: Race, values) -> bool:
        if self.settings.pruner == "halving":
            self._report(race.trials[0], score(values, self.metric), self.rungs[race.rung])
            return self.trials[race.trials[0]].should_prune()
        if self.settings.pruner != "paired" or self.leader is None:
            return False
        return self.rule.gap(values, self.values(self.leader[0], None), sides=1)[1] < 0

    # the Strategy interface -----------------------------------------------------------------------
    def ask(self, idle: int) -> list[Goal]:
        while idle > len(self.queue) and len(self.trials) < self.settings.trials:
            number, params = self._ask()
            candidate = self.propose(params)
            self.journal.ask_trial(number, candidate.id, params)
            self._race(number, candidate)
        goals, self.queue = self.queue, []
        return goals

    def tell(self, goal: Goal) -> None:
        race = self.racing[goal.cid]
        n = self.rungs[race.rung]
        values = self.values(goal.cid, n)
        last = race.rung == len(self.rungs) - 1
        if last or self._behind(race, values):
            outcome = Outcome("complete" if last else "pruned", score(values, self.metric), n)
            del self.racing[goal.cid]
            self.outcomes[goal.cid] = outcome
            for number in race.trials:
                self._told(number, goal.cid, outcome)
        else:
            race.rung += 1
            self.queue.append(self._goal(race))

    def finished(self) -> bool:
        return len(self.trials) >= self.settings.trials and not self.racing and not self.queue

    def counted(self) -> dict[str, int | None]:
        return dict.fromkeys(self.outcomes)

    def summary(self) -> SearchSummary:
        rows = self.journal.trials()
        return SearchSummary(
            sampler=self.settings.sampler,
            trials=len(rows),
            candidates=len({r.candidate for r in rows}),
            pruned=sum(r.state == "pruned" for r in rows),
            items_scored=sum(o.items for o in self.outcomes.values()) * self._tasks(),
            items_saved=sum(self.limit - o.items for o in self.outcomes.values()) * self._tasks(),
            order=[r.candidate for r in rows],
            values=[r.value for r in rows],
            complete=[r.state == "complete" for r in rows],
        )

    def _tasks(self) -> int:
        any_cid = next(iter(self.outcomes), None)
        return len(self.values(any_cid, None)) if any_cid else 0
