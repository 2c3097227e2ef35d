"""`merger sweep`: every candidate of every recipe through merge -> its training steps -> eval, journaled, resumable.

Candidates without training are merged in memory and scored live; only the kept ones are written to disk.
The driver (`Sweep`) writes the journal (a search strategy journals its own trials). A strategy (`strategies/`)
asks for goals; the driver turns each into units of work (`jobs.Unit`: merge, a training step, score a slice of
items, save), leases them to an executor (`executors/`: in this process, or Ray workers), and records each result
as it arrives, so a rerun skips finished work and redoes only the units that were interrupted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from rich.console import Console

from merger.config.recipe import Candidate, ExecuteSettings, child, input_models, point, reference, search_space
from merger.config.results import EvalSummary, Scores, SweepCandidate, SweepMeta, TaskScore
from merger.core.atomic import atomic_output_dir, atomic_write
from merger.core.errors import UserError
from merger.merge.run import in_memory_supported
from merger.publish.card import write_card
from merger.sweep import executors, jobs, strategies
from merger.sweep.executors.base import Finished
from merger.sweep.journal import Journal
from merger.sweep.leaderboard import decide, write_reports
from merger.sweep.plan import plan_sweep, sweep_settings
from merger.sweep.racing import Racing, Values, racing_for
from merger.sweep.selection import Ranked, never_kept, rank
from merger.sweep.strategies import search
from merger.sweep.strategies.base import Fixed, Goal, Strategy

console = Console(stderr=True)
LEASES = 2  # times a unit whose worker died is leased again before the sweep stops with the last reason


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _has_model(folder: Path) -> bool:
    return (folder / "config.json").exists()


class Sweep:
    def __init__(
        self,
        candidates: list[Candidate],
        out: Path,
        device: str,
        keep: int | None,
        lora_merge_cache: Path | None = None,
        fresh: bool = False,
        execute: ExecuteSettings | None = None,
        random_seed: int | None = None,
    ):
        self.eval, self.select, recipes_execute = sweep_settings(candidates)
        self.execute = execute or recipes_execute
        executors.check(self.execute, candidates[0].recipe_path)
        self.search, self.recipe, self.random_seed = candidates[0].search, candidates[0].recipe_path, random_seed
        self.candidates = {c.id: c for c in candidates} if self.search is None else {}  # a search proposes its own
        self.search_summary = None
        self.out = Path(out)
        self.device = device
        self.lora_merge_cache = lora_merge_cache
        self.keep = keep or self.select.keep
        self.counted: dict[str, int | None] = {}
        self.race_count: int | None = None
        self.eval_key = _key(self.eval.model_dump())  # names its scoring stages: other settings, other stages
        self.journal = Journal(self.out, fresh=fresh)
        if fresh:  # the journal forgot these; their folders go too
            for name in ("candidates", "best"):
                shutil.rmtree(self.out / name, ignore_errors=True)
        scored_with = self.journal.eval_keys() - {self.eval_key}
        if scored_with:  # items of another yardstick would be ranked with these
            self.journal.close()
            raise UserError.one(
                str(self.out),
                "eval",
                "this sweep folder was scored with other `eval:` settings; use another --out, or --fresh to restart",
            )
        try:  # before any candidate is journaled: a cluster that cannot start leaves nothing behind
            self.executor = executors.make(self.execute, self.out, device, lora_merge_cache, candidates[0].recipe_path)
        except BaseException:
            self.journal.close()
            raise
        settings = {
            "metric": self.select.metric,
            "eval": self.eval.model_dump(mode="json"),
            "select": self.select.model_dump(mode="json"),
        }
        self.journal.set_meta("settings", settings)  # what `merger report` reads of a sweep that did not finish
        for c in self.candidates.values():
            self.journal.add_candidate(c)
        self.started: dict[tuple[str, str], float] = {}
        self.losses: dict[tuple[str, str], int] = {}  # (candidate, stage) -> times its worker died under it

    def folder(self, cid: str) -> Path:
        return self.out / "candidates" / cid

    def close(self) -> None:
        self.executor.close()
        self.journal.close()

    # from goals to units ----------------------------------------------------------------------
    def score_stage(self, goal: Goal) -> str:
        return f"eval-{goal.split}-{self.eval_key}-{goal.offset}-{goal.limit}"

    def chain(self, c: Candidate) -> list[tuple[str, str, Path, int | None]]:
        """A trained candidate's stages as (candidate, stage, output folder, index of its training step): the merge,
        then each training step, the last writing the candidate's model. A refined child of a trained parent starts
        from the parent's model (while it is there) and runs only its own steps."""
        parent = self.candidates.get(c.parent) if c.parent else None
        own = self.folder(c.id)
        head = self.chain(parent)[-1] if parent is not None and parent.train else None
        if head is not None and self.journal.done(head[0], head[1]) and _has_model(head[2]):
            stages, first = [head], len(parent.train)
        else:
            stages, first = [(c.id, "merge", own / "merged", None)], 0
        for index in range(first, len(c.train)):
            folder = own / ("model" if index == len(c.train) - 1 else f"step-{index + 1}")
            stages.append((c.id, f"train-{index + 1}-{c.train[index].kind}", folder, index))
        return stages

    def next_unit(self, goal: Goal) -> jobs.Unit | None:
        """The next unit of work `goal` needs (its model first: merge and training steps, or saved weights), or None
        once the journal has it. A finished stage whose output is gone (deleted by an earlier --keep, or a step's
        input removed once the step was done) is redone from the last output still there."""
        c, done = self.candidates[goal.cid], self.journal.done
        model = self.folder(c.id) / "model"
        if goal.kind == "score" and done(c.id, self.score_stage(goal)):
            return None
        if c.reference:  # an input model, scored as it is
            return jobs.Unit(c, self.score_stage(goal), "score", Path(c.reference), goal.split, goal.limit, goal.offset)
        for named in c.upstream:  # its named merges first: each a node of the journal, under its folder's name
            node = Path(named.path).name
            if not (done(node, "merge") and _has_model(Path(named.path))):
                return jobs.Unit(c, "merge", "upstream", Path(named.path), node=node, name=named.name)
        saved = done(c.id, "save") and _has_model(model)
        if goal.kind == "save":
            if c.train or saved:
                return None
            scored = self.journal.stage(c.id, "scored-weights")
            return jobs.Unit(c, "save", "save", model, scored=scored.result["digest"] if scored else None)
        if c.train:
            chain = self.chain(c)
            ready = max(
                (i for i, (cid, stage, out, _) in enumerate(chain) if done(cid, stage) and _has_model(out)), default=-1
            )
            if ready == -1:
                return jobs.Unit(c, "merge", "merge", self.folder(c.id) / "merged")
            if ready < len(chain) - 1:
                _, stage, folder, step = chain[ready + 1]
                return jobs.Unit(c, stage, "train", folder, source=chain[ready][2], step=step)
        elif not in_memory_supported(c) and not saved:
            return jobs.Unit(c, "save", "save", model)  # vocabulary surgery: scored from disk, like a kept one
        on_disk = bool(c.train) or saved
        return jobs.Unit(
            c,
            self.score_stage(goal),
            "score",
            model if on_disk else None,
            goal.split,
            goal.limit,
            goal.offset,
            digest=not on_disk and not done(c.id, "scored-weights"),
        )

    # the loop ---------------------------------------------------------------------------------
    def drive(self, strategy: Strategy) -> None:
        """Reach every goal the strategy asks for, keeping every worker busy; record each result as it arrives."""
        pending: list[Goal] = []
        busy: dict[str, Goal] = {}  # candidate -> the goal whose unit is running (one unit per candidate at once)
        making: set[str] = set()  # named merges being made: one unit each, however many candidates take them
        while True:
            settled = False
            while not settled:
                settled = True
                for goal in strategy.ask(self.executor.slots - len(busy) - len(pending)):
                    if goal.candidate is not None and goal.cid not in self.candidates:
                        self.candidates[goal.cid] = goal.candidate
                        self.journal.add_candidate(goal.candidate)
                    pending.append(goal)
                for goal in list(pending):
                    if goal.cid in busy:
                        continue
                    unit = self.next_unit(goal)
                    if unit is None:
                        pending.remove(goal)
                        strategy.tell(goal)
                        settled = False
                    elif len(busy) < self.executor.slots and unit.node not in making:
                        self.lease(unit)
                        busy[goal.cid] = goal
                        making |= {unit.node} - {None}
            if not busy:
                return
            for event in self.executor.events():
                busy.pop(event.unit.candidate.id)
                making.discard(event.unit.node)
                if isinstance(event, Finished):
                    self.record(event)
                    continue
                key = (event.unit.journal_id, event.unit.stage)
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

    def lease(self, unit: jobs.Unit) -> None:
        console.print(f"[bold]{unit.journal_id}[/bold] {unit.stage} ...")
        self.started[(unit.journal_id, unit.stage)] = self.journal.start(unit.journal_id, unit.stage)
        self.executor.submit(unit)

    def record(self, event: Finished) -> None:
        unit, outcome = event.unit, event.outcome
        cid = unit.candidate.id
        if outcome.digest is not None:  # the first in-memory merge scored records its weights' digest
            started = self.journal.start(cid, "scored-weights")
            self.journal.finish(cid, "scored-weights", started, result={"digest": outcome.digest})
        path = str(outcome.path) if outcome.path else None
        started = self.started.pop((unit.journal_id, unit.stage))
        self.journal.finish(unit.journal_id, unit.stage, started, path=path, result=outcome.result, items=outcome.items)
        self.journal.count_work(unit.journal_id, unit.stage, event.worker, time.time() - started, outcome.counters)
        if unit.job == "train" and unit.source.parent == self.folder(cid):  # its own input (not a parent's model)
            shutil.rmtree(unit.source, ignore_errors=True)  # is no longer needed once the journal has its output
        where = "" if event.worker == "local" else f" on {event.worker}"
        console.print(f"[bold]{unit.journal_id}[/bold] {unit.stage} [green]done[/green]{where}")

    # the sweep --------------------------------------------------------------------------------
    def racing(self) -> Racing:
        """The one stop rule, its error split over the candidates the race starts with (the first stage's, or the
        search's trials): fixed when it starts and journaled, so the final ranking's intervals are the race's even
        after refine stages and references add candidates."""
        if self.race_count is None:
            first = [c for c in self.candidates.values() if c.stage == 0 and not c.reference]
            self.race_count = self.search.trials if self.search is not None else len(first)
            self.journal.set_meta("race_candidates", self.race_count)
        return racing_for(self.select, self.race_count, self.journal.task_sizes)

    def strategy(self) -> Strategy:
        values = lambda cid, below: self.journal.item_values(cid, "select", below, self.select.signal)  # noqa: E731
        if self.search is None:
            return strategies.make(list(self.candidates), self.select, self.eval.limit, values, self.racing())
        return search.Search(
            self.search,
            search_space(self.recipe),
            self.eval.limit,
            self.select.metric,
            lambda params: point(self.recipe, params, self.random_seed),
            values,
            self.journal,
            self.racing(),
        )

    def run(self) -> list[Ranked]:
        strategy = self.strategy()
        self.drive(strategy)
        self.counted = strategy.counted()
        if self.search is not None:
            self.search_summary = strategy.summary()
            for trial in self.journal.trials():  # told before a resume, so never asked for again
                self.candidates.setdefault(trial.candidate, point(self.recipe, trial.params, self.random_seed))
        for stage in range(1, max((len(c.refine) for c in self.candidates.values()), default=0) + 1):
            self.drive(Fixed([Goal(c.id, limit=self.eval.limit) for c in self.refine(stage)]))
        if self.select.references:
            self.drive(Fixed([Goal(r.id, limit=self.eval.limit) for r in self.references()]))
        ids = list(self.candidates)
        ranked = self.eligible(self.ranked())
        winner = self.candidates[ranked[0].id]
        if self.select.report_items:
            self.drive(Fixed([Goal(winner.id, split="report", offset=self.eval.limit, limit=self.select.report_items)]))
        kept = [r.id for r in ranked[: self.keep]]
        self.drive(Fixed([Goal(cid, kind="save") for cid in kept]))
        for cid in ids:
            if cid not in kept and self.folder(cid).exists():
                shutil.rmtree(self.folder(cid))  # their journal rows stay
        self.publish_best(winner)
        return ranked

    def values(self, signal: str = "metric") -> dict[str, Values]:
        """Each scored candidate's selection items (those its rank counts), by the metric or the deciding signal."""
        found = {cid: self.journal.item_values(cid, "select", self.counted.get(cid), signal) for cid in self.candidates}
        return {cid: v for cid, v in found.items() if v}

    def ranked(self) -> list[Ranked]:
        return rank(self.values(), self.select.metric, self.values(self.select.signal), self.racing())

    def eligible(self, ranked: list[Ranked]) -> list[Ranked]:
        """The ranking without those never kept (`selection.never_kept`)."""
        parents = {cid: c.parent for cid, c in self.candidates.items() if c.parent}
        references = {cid for cid, c in self.candidates.items() if c.reference}
        out = never_kept(self.values(self.select.signal), parents, references, self.racing())
        return [r for r in ranked if r.id not in out]

    def references(self) -> list[Candidate]:
        """The sweep's local input models (not named merges, not LoRA pairs), as reference candidates."""
        found = {}
        for c in [c for c in self.candidates.values() if c.stage == 0 and not c.reference]:
            made = {named.path for named in c.upstream}
            for ref in input_models(c.merge):
                if "+" not in ref and ref not in made and (Path(ref) / "config.json").exists():
                    found.setdefault(ref, reference(ref, c))
        for r in found.values():
            if r.id not in self.candidates:
                self.candidates[r.id] = r
                self.journal.add_candidate(r)
        return list(found.values())

    def refine(self, stage: int) -> list[Candidate]:
        """Refine stage `stage`: per recipe, its best `top` candidates of the stage before (among those kept), each
        trained further into a child; the children are journaled and returned."""
        ranked = [self.candidates[r.id] for r in self.eligible(self.ranked())]
        children = []
        for recipe in dict.fromkeys(c.recipe_path for c in ranked):
            before = [c for c in ranked if c.recipe_path == recipe and c.stage == stage - 1 and len(c.refine) >= stage]
            children += [child(c, stage) for c in before[: before[0].refine[stage - 1].top]] if before else []
        for c in children:
            if c.id not in self.candidates:
                self.candidates[c.id] = c
                self.journal.add_candidate(c)
        return children

    def scores(self, cid: str) -> Scores:
        """The winner's published scores: from the report items when there are some, else the selection items."""
        split = "report" if self.journal.item_values(cid, "report") else "select"
        below = self.counted.get(cid) if split == "select" else None
        facts: dict[str, TaskScore] = {}
        for result in self.journal.results(cid, f"eval-{split}-"):
            facts.update(EvalSummary.model_validate(result).tasks)
        return Scores(
            items=split,
            sweep=str(self.out),
            candidate=cid,
            tasks={
                task: jobs.task_result(facts[task], list(v.values()))
                for task, v in self.journal.item_values(cid, split, below).items()
            },
        )

    def publish_best(self, winner: Candidate) -> None:
        """DIR/best: the winner's folder, hard-linked where the filesystem allows (no second copy of weights),
        with the journal's scores and a model card."""
        source = self.folder(winner.id) / "model"  # kept: saved, or trained
        with atomic_output_dir(self.out / "best", replace=True) as tmp:
            for f in source.iterdir():
                if f.name == "README.md":
                    continue
                try:
                    os.link(f, tmp / f.name)
                except OSError:
                    shutil.copy2(f, tmp / f.name)
            for warning in write_card(tmp, name=f"{self.out.name}-{winner.id}", scores=self.scores(winner.id)):
                console.print(f"[yellow]warning:[/yellow] {warning}")


def run_sweep(
    recipes: list[Path],
    out: Path,
    *,
    device: str = "auto",
    keep: int | None = None,
    fresh: bool = False,
    strict: bool = False,
    random_seed: int | None = None,
    lora_merge_cache: Path | None = None,
    execute: dict | None = None,
) -> Path:
    """`merger sweep`: check the recipes, then run (or resume) the sweep in `out`; returns `out/best`. `execute`:
    the `--executor` flags given, over the recipes' `execute:` section."""
    plan = plan_sweep(recipes, keep, device, strict, random_seed, execute)
    for note in dict.fromkeys(n for c in plan.candidates for n in c.notes):
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    out = Path(out)
    sweep = Sweep(plan.candidates, out, device, keep, lora_merge_cache, fresh, plan.execute, random_seed)
    try:
        sweep.run()
        meta = SweepMeta(
            metric=sweep.select.metric,
            eval=sweep.eval,
            select=sweep.select,
            candidates={
                c.id: SweepCandidate(
                    recipe=c.recipe_path, params=c.params, parent=c.parent, stage=c.stage, reference=c.reference
                )
                for c in sweep.candidates.values()
            },
            search=sweep.search_summary,
            counted={cid: n for cid, n in sweep.counted.items() if n is not None},
        )
        meta.decision = decide(sweep.journal, meta)
        atomic_write(out / "sweep.json", meta.model_dump_json(indent=2) + "\n")
        write_reports(sweep.journal, out, meta)
    finally:
        sweep.close()
    return out / "best"
