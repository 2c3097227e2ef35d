"""`merger sweep`: the driver, the loop only. A strategy (`strategies/`) asks for goals; the planner
(`flow.plan`) names each candidate's next step (its named merges, merge and training steps, a save, a slice of items
scored); the driver leases it to an executor (`executors/`: in this process, or Ray workers, each with a workspace
kept for the whole sweep), records what it returns in the journal as it arrives, and tells the strategy when a goal
is reached, so a rerun skips finished work and redoes only the steps that were interrupted. Later stages' candidates
come from `stages/`, the ranking from `standing.py`, the end (keep-K, `best/`, `sweep.json`) from `finish.py`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from rich.console import Console

from merger.config.recipe import Points
from merger.config.results import SweepCandidate, SweepMeta
from merger.core.errors import UserError
from merger.evaluate.evaluator import Prepared
from merger.flow.options import RunOptions
from merger.flow.plan import Goal, Planner
from merger.flow.steps import Step
from merger.sweep import executors, finish, stages, strategies
from merger.sweep.executors.base import Finished, Lost
from merger.sweep.journal import SIZES, Journal
from merger.sweep.plan import SweepPlan, plan_sweep
from merger.sweep.selection import Ranked
from merger.sweep.stages import references
from merger.sweep.standing import RACE, Standing
from merger.sweep.strategies import search
from merger.sweep.strategies.base import Fixed, Scores, Strategy

console = Console(stderr=True)
LEASES = 2  # times a step whose worker died is leased again before the sweep stops with the last reason


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:8]


class Sweep:
    def __init__(self, plan: SweepPlan, out: Path, options: RunOptions, fresh: bool = False):
        self.eval, self.select, self.execute, self.keep = plan.eval, plan.select, plan.execute, plan.keep
        first = plan.candidates[0]
        self.search, self.recipe, self.random_seed = first.search, first.recipe_path, options.random_seed
        self.candidates = {c.id: c for c in plan.candidates} if self.search is None else {}  # a search proposes its own
        self.search_summary = None
        self.out = Path(out)
        self.counted: dict[str, int | None] = {}
        self.journal = Journal(self.out, fresh=fresh)
        if fresh:  # the journal forgot these; their folders go too
            for name in ("candidates", "best"):
                shutil.rmtree(self.out / name, ignore_errors=True)
        eval_key = _key(self.eval.model_dump())
        if self.journal.eval_keys() - {eval_key}:  # items of another yardstick would be ranked with these
            self.journal.close()
            raise UserError.one(
                str(self.out),
                "eval",
                "this sweep folder was scored with other `eval:` settings; use another --out, or --fresh to restart",
            )
        self.planner = Planner(self.out, eval_key, self.candidates, self.journal)
        try:  # before any candidate is journaled: a cluster that cannot start leaves nothing behind
            self.executor = executors.make(self.execute, self.out, options, self.recipe)
        except BaseException:
            self.journal.close()
            raise
        settings = {
            "metric": self.select.metric,
            "eval": self.eval.model_dump(mode="json"),
            "select": self.select.model_dump(mode="json"),
        }
        self.journal.set_meta("settings", settings)  # what `merger report` reads of a sweep that did not finish
        if self.select.strategy == "halving" and self.search is None and self.journal.meta(SIZES) is None:
            workspace = getattr(self.executor, "workspace", None)  # the local executor's: its tasks, built once
            started = time.time()
            prepared = workspace.tasks(self.eval) if workspace is not None else Prepared(self.eval)
            self.journal.set_meta(SIZES, prepared.sizes())
            where = "local" if workspace is not None else "driver"  # Ray's driver builds them once for the sizes
            self.journal.count_work("", "task-sizes", where, time.time() - started, {"task_builds": 1})
        if self.journal.meta(RACE) is None:  # the race's pairs: the candidates it starts with, fixed now
            first_stage = [c for c in plan.candidates if c.stage == 0 and not c.reference]
            self.journal.set_meta(RACE, self.search.trials if self.search is not None else len(first_stage))
        self.add(self.candidates.values())
        self.started: dict[tuple[str, str], float] = {}
        self.losses: dict[tuple[str, str], int] = {}  # (candidate, stage) -> times its worker died under it

    def close(self) -> None:
        self.executor.close()
        self.journal.close()

    def add(self, candidates) -> None:
        for c in candidates:
            self.candidates.setdefault(c.id, c)
            self.journal.add_candidate(c)

    # the loop ---------------------------------------------------------------------------------
    def drive(self, strategy: Strategy) -> None:
        """Reach every goal the strategy asks for, keeping every worker busy: ask -> plan the next step -> lease ->
        record -> tell, each result recorded as it arrives."""
        pending: list[Goal] = []
        busy: dict[str, Goal] = {}  # candidate -> the goal whose step is running (one step per candidate at once)
        making: set[str] = set()  # what a goal's step makes for others (a named merge, an earlier candidate's
        # weights): one step each, however many goals need it
        leased: dict[tuple[str, str], str] = {}  # (journal id, stage) of a running step -> its goal's candidate
        while True:
            settled = False
            while not settled:
                settled = True
                for goal in strategy.ask(self.executor.slots - len(busy) - len(pending)):
                    if goal.candidate is not None and goal.cid not in self.candidates:
                        self.add([goal.candidate])
                    pending.append(goal)
                ready = []
                for goal in list(pending):
                    if goal.cid in busy:
                        continue
                    step = self.planner.next_step(goal)
                    if step is None:
                        pending.remove(goal)
                        strategy.tell(goal)
                        settled = False
                    else:
                        ready.append((goal, step))
                while len(busy) < self.executor.slots:
                    free = [(g, s) for g, s in ready if s.journal_id not in making and g.cid not in busy]
                    if not free:
                        break
                    # a step whose candidate's worker is free (or that no worker holds) first: rungs stay where merged
                    goal, step = next(((g, s) for g, s in free if self.executor.prefers(s)), free[0])
                    self.lease(step)
                    busy[goal.cid] = goal
                    leased[(step.journal_id, step.stage)] = goal.cid
                    if step.journal_id != goal.cid:
                        making.add(step.journal_id)
            if not busy:
                return
            for event in self.executor.events():
                busy.pop(leased.pop((event.step.journal_id, event.step.stage)))
                making.discard(event.step.journal_id)
                if isinstance(event, Finished):
                    self.record(event)
                else:
                    self.lost(event)

    def lease(self, step: Step) -> None:
        console.print(f"[bold]{step.journal_id}[/bold] {step.stage} ...")
        self.started[(step.journal_id, step.stage)] = self.journal.start(step.journal_id, step.stage)
        self.executor.submit(step)

    def record(self, event: Finished) -> None:
        step, outcome = event.step, event.outcome
        started = self.started.pop((step.journal_id, step.stage))
        step.record(self.journal, outcome, started)
        self.journal.count_work(step.journal_id, step.stage, event.worker, time.time() - started, outcome.counters)
        where = "" if event.worker == "local" else f" on {event.worker}"
        console.print(f"[bold]{step.journal_id}[/bold] {step.stage} [green]done[/green]{where}")

    def lost(self, event: Lost) -> None:
        key = (event.step.journal_id, event.step.stage)
        self.losses[key] = self.losses.get(key, 0) + 1
        if self.losses[key] > LEASES:
            raise UserError.one(
                str(self.out),
                f"{key[0]} {key[1]}",
                f"its worker died {self.losses[key]} times, the last time: {event.why}; "
                "free memory on the workers (fewer --workers, a smaller model) and run again to resume",
            )
        console.print(
            f"[yellow]worker {event.worker} died[/yellow] ({event.why}); "
            f"{key[0]} {key[1]} is leased again ({self.losses[key]} of {LEASES} retries)"
        )

    # the sweep --------------------------------------------------------------------------------
    def standing(self) -> Standing:
        return Standing(self.journal, self.select, self.lineage(), self.counted, self.eval.seed)

    def lineage(self) -> dict[str, SweepCandidate]:
        return {
            c.id: SweepCandidate(
                recipe=c.recipe_path,
                params=c.params,
                parent=c.parent,
                stage=c.stage,
                reference=c.reference,
                inputs=c.inputs,
            )
            for c in self.candidates.values()
        }

    def strategy(self) -> Strategy:
        values = lambda cid, below: self.journal.item_values(cid, "select", below, self.select.signal)  # noqa: E731
        prob = lambda cid, below: self.journal.item_values(cid, "select", below, "auto")  # noqa: E731
        racing = self.standing().racing()
        if self.search is None:
            ids, limit, seed = list(self.candidates), self.eval.limit, self.eval.seed
            try:
                return strategies.make(ids, self.select, limit, Scores(values, prob, seed), racing)
            except ValueError as exc:
                raise UserError.one(self.recipe, "select.budget", str(exc)) from None
        return search.Search(
            self.search,
            self.points.space,
            self.eval.limit,
            self.select.metric,
            self.points.at,
            values,
            self.journal,
            racing,
        )

    def run(self) -> list[Ranked]:
        if self.search is not None:
            self.points = Points(self.recipe, self.random_seed)  # the recipe read once; each trial a point of it
        strategy = self.strategy()
        self.drive(strategy)
        self.counted = strategy.counted()
        if self.search is not None:
            self.search_summary = strategy.summary()
            for trial in self.journal.trials():  # told before a resume, so never asked for again
                self.candidates.setdefault(trial.candidate, self.points.at(trial.params))
        for n in range(1, max((len(c.refine) for c in self.candidates.values()), default=0) + 1):
            ranked = [self.candidates[r.id] for r in self.standing().ranked() if not self.candidates[r.id].reference]
            groups: dict[tuple[str, str], list] = {}  # (stage kind, recipe) -> the stage before's best first
            for c in ranked:
                if c.stage == n - 1 and len(c.refine) >= n:
                    groups.setdefault((c.refine[n - 1].kind, c.recipe_path), []).append(c)
            for kind in dict.fromkeys(k for k, _ in groups):
                stages.get(kind).run(self, [g for (k, _), g in groups.items() if k == kind], n)
        if self.select.references:
            made = references.references(list(self.candidates.values()))
            self.add(made)
            self.drive(Fixed([Goal(r.id, limit=self.items_of(None)) for r in made]))
        ranked = self.standing().eligible()
        winner = ranked[0].id
        if self.select.report_items:
            self.drive(Fixed([Goal(winner, split="report", offset=self.eval.limit, limit=self.select.report_items)]))
        kept = [r.id for r in ranked[: self.keep]]
        self.drive(Fixed([Goal(cid, kind="save") for cid in kept]))
        finish.prune(self.out, list(self.candidates), kept)
        finish.publish_best(self.journal, self.out, winner, self.counted.get(winner))
        return ranked

    # what a stage may ask (`stages.Host`) --------------------------------------------------------
    def score(self, made: list) -> None:
        self.add(made)
        self.counted |= {c.id: self.items_of(c.parent) for c in made}  # each child on its parent's items
        self.drive(Fixed([Goal(c.id, limit=self.counted[c.id]) for c in made]))

    def folder(self, cid: str) -> Path:
        return self.planner.folder(cid) / "model"

    def values(self, cid: str):
        return self.journal.item_values(cid, "select", self.counted.get(cid), self.select.signal)

    def items_of(self, cid: str | None) -> int | None:
        """The selection items a later candidate is scored on: those `cid`'s rank counts (a refined child's parent),
        or the most any candidate's rank counts (a reference row), else eval.limit."""
        if cid is not None and self.counted.get(cid) is not None:
            return self.counted[cid]
        counted = [n for n in self.counted.values() if n is not None]
        return max(counted) if counted else self.eval.limit

    def meta(self) -> SweepMeta:
        return SweepMeta(
            metric=self.select.metric,
            eval=self.eval,
            select=self.select,
            candidates=self.lineage(),
            search=self.search_summary,
            counted={cid: n for cid, n in self.counted.items() if n is not None},
        )


def run_sweep(recipes: list[Path], out: Path, options: RunOptions, *, keep=None, fresh=False, execute=None) -> Path:
    """`merger sweep`: check the recipes, then run (or resume) the sweep in `out`; returns `out/best`. `execute`:
    the `--executor` flags given, over the recipes' `execute:` section."""
    plan = plan_sweep(recipes, keep, options.device, options.strict, options.random_seed, execute)
    for note in dict.fromkeys(n for c in plan.candidates for n in c.notes):
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    sweep = Sweep(plan, Path(out), options, fresh)
    try:
        sweep.run()
        finish.write_meta(sweep.journal, sweep.out, sweep.meta())
    finally:
        sweep.close()
    return Path(out) / "best"
