"""`merger sweep`: every candidate of every recipe through merge -> optional DPO -> eval, journaled, resumable.

Candidates without DPO are merged in memory and scored live; only the kept ones are written to disk.
The driver is the journal's only writer: each stage's work is a function in `jobs.py`, recorded here when it
finishes, so a rerun skips finished work and redoes only the stage that was interrupted.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from merger.config.recipe import Candidate
from merger.config.results import EvalSummary, ItemRow, Scores, SweepCandidate, SweepMeta, TaskScore
from merger.core.atomic import atomic_output_dir, atomic_write
from merger.core.errors import UserError
from merger.merge.run import folder_digest, in_memory_supported
from merger.publish.card import write_card
from merger.sweep import jobs
from merger.sweep.journal import Journal
from merger.sweep.leaderboard import write_reports
from merger.sweep.plan import plan_sweep, sweep_settings
from merger.sweep.selection import Ranked, rank

console = Console(stderr=True)
Work = Callable[[], tuple[Any, Path | None, list[ItemRow] | None]]


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:8]


class Sweep:
    def __init__(
        self,
        candidates: list[Candidate],
        out: Path,
        device: str,
        keep: int | None,
        lora_merge_cache: Path | None = None,
        fresh: bool = False,
    ):
        self.candidates = {c.id: c for c in candidates}
        self.out = Path(out)
        self.device = device
        self.lora_merge_cache = lora_merge_cache
        self.eval, self.select = sweep_settings(candidates)
        self.keep = keep or self.select.keep
        self.journal = Journal(self.out, fresh=fresh)
        if fresh:  # the journal forgot these; their folders go too
            for name in ("candidates", "best"):
                shutil.rmtree(self.out / name, ignore_errors=True)
        for c in candidates:
            self.journal.add_candidate(c)

    def folder(self, cid: str) -> Path:
        return self.out / "candidates" / cid

    # stages -----------------------------------------------------------------------------------
    def _stage(self, c: Candidate, name: str, work: Work, redo: bool = False) -> Any:
        """Run `work()` as a journaled stage unless it already finished; returns its (JSON) result.

        `redo` reruns a finished stage whose output is gone (weights deleted by an earlier --keep).
        """
        if self.journal.done(c.id, name) and not redo:
            return self.journal.stage(c.id, name).result
        console.print(f"[bold]{c.id}[/bold] {name} ...")
        started = self.journal.start(c.id, name)
        result, path, items = work()
        self.journal.finish(c.id, name, started, path=str(path) if path else None, result=result, items=items)
        console.print(f"[bold]{c.id}[/bold] {name} [green]done[/green]")
        return result

    def model_folder(self, c: Candidate) -> Path | None:
        """Candidates with DPO live on disk (merged, then refined); others only once saved."""
        if c.dpo is None:
            saved = self.folder(c.id) / "model"
            if not in_memory_supported(c):  # vocabulary surgery: scored from disk, like a kept candidate
                self.save(c)
                return saved
            return saved if self.journal.done(c.id, "save") and (saved / "config.json").exists() else None
        merged, refined = self.folder(c.id) / "merged", self.folder(c.id) / "model"
        gone = self.journal.done(c.id, "dpo") and not (refined / "config.json").exists()
        if gone or not self.journal.done(c.id, "dpo"):
            self._stage(c, "merge", lambda: ({}, self._materialize(c, merged), None), redo=gone)
        self._stage(
            c, "dpo", lambda: (jobs.refine_candidate(c, merged, refined, self.device), refined, None), redo=gone
        )
        return refined

    def score(self, c: Candidate, split: str, limit: int | None, offset: int = 0) -> None:
        """Score items [offset, offset + limit) of the seeded shuffle; a finished slice is never rescored."""
        name = f"eval-{split}-{_key(self.eval.model_dump())}-{offset}-{limit}"

        def work():
            recorded = self.journal.done(c.id, "scored-weights")  # the first in-memory merge records its digest
            summary, items, digest = jobs.score(
                c,
                self.model_folder(c),
                self.eval,
                split,
                limit,
                offset,
                self.device,
                self.lora_merge_cache,
                digest=not recorded,
            )
            if digest is not None:
                started = self.journal.start(c.id, "scored-weights")
                self.journal.finish(c.id, "scored-weights", started, result={"digest": digest})
            return summary, None, items

        self._stage(c, name, work)

    def _materialize(self, c: Candidate, target: Path) -> Path:
        return jobs.materialize(c, target, self.device, self.lora_merge_cache)

    def save(self, c: Candidate) -> None:
        """Write a kept candidate's weights, and check they are the very ones it was scored with."""
        if c.dpo is not None:
            return
        target = self.folder(c.id) / "model"

        def work():
            self._materialize(c, target)
            scored = self.journal.stage(c.id, "scored-weights")
            if scored is None:  # scored from disk: the saved folder is the one scored
                return {"digest": None, "checked_against_scored": False}, target, None
            digest = folder_digest(target)
            if scored.result["digest"] != digest:
                raise UserError.one(
                    str(target),
                    c.id,
                    f"the weights saved differ from the weights scored ({digest[:12]} != "
                    f"{scored.result['digest'][:12]}); the saved model is not the one on the leaderboard",
                )
            return {"digest": digest, "checked_against_scored": True}, target, None

        self._stage(c, "save", work, redo=not (target / "config.json").exists())

    # strategies -------------------------------------------------------------------------------
    def run(self) -> list[Ranked]:
        ids = list(self.candidates)
        if self.select.strategy == "grid":
            for cid in ids:
                self.score(self.candidates[cid], "select", self.eval.limit)
        else:
            self.halving(ids)
        ranked = self.ranked()
        winner = self.candidates[ranked[0].id]
        if self.select.report_items:
            self.score(winner, "report", self.select.report_items, offset=self.eval.limit)
        kept = [r.id for r in ranked[: self.keep]]
        for cid in kept:
            self.save(self.candidates[cid])
        for cid in ids:
            if cid not in kept and self.folder(cid).exists():
                shutil.rmtree(self.folder(cid))  # their journal rows stay
        self.publish_best(winner)
        return ranked

    def halving(self, ids: list[str]) -> None:
        """Successive halving: all on a few items, the best 1/eta on eta times as many, up to eval.limit."""
        limit = self.eval.limit
        rung = self.select.min_items or max(1, limit // (self.select.eta**2))
        alive, scored = ids, 0
        while True:
            for cid in alive:
                self.score(self.candidates[cid], "select", rung - scored, offset=scored)
            if rung >= limit or len(alive) == 1:
                return
            ranked = rank({cid: self.journal.item_values(cid, "select") for cid in alive}, self.select.metric)
            alive = [r.id for r in ranked[: max(1, math.ceil(len(alive) / self.select.eta))]]
            scored, rung = rung, min(limit, rung * self.select.eta)

    def ranked(self) -> list[Ranked]:
        values = {cid: self.journal.item_values(cid, "select") for cid in self.candidates}
        return rank({k: v for k, v in values.items() if v}, self.select.metric)

    def scores(self, cid: str) -> Scores:
        """The winner's published scores: from the report items when there are some, else the selection items."""
        split = "report" if self.journal.item_values(cid, "report") else "select"
        facts: dict[str, TaskScore] = {}
        for result in self.journal.results(cid, f"eval-{split}-"):
            facts.update(EvalSummary.model_validate(result).tasks)
        return Scores(
            items=split,
            sweep=str(self.out),
            candidate=cid,
            tasks={
                task: jobs.task_result(facts[task], list(v.values()))
                for task, v in self.journal.item_values(cid, split).items()
            },
        )

    def publish_best(self, winner: Candidate) -> None:
        """DIR/best: the winner's folder, hard-linked where the filesystem allows (no second copy of weights),
        with the journal's scores and a model card."""
        source = self.model_folder(winner) or self.folder(winner.id) / "model"
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
) -> Path:
    """`merger sweep`: check the recipes, then run (or resume) the sweep in `out`; returns `out/best`."""
    plan = plan_sweep(recipes, keep, device, strict, random_seed)
    for note in dict.fromkeys(n for c in plan.candidates for n in c.notes):
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    out = Path(out)
    sweep = Sweep(plan.candidates, out, device, keep, lora_merge_cache, fresh)
    try:
        sweep.run()
        meta = SweepMeta(
            metric=sweep.select.metric,
            eval=sweep.eval,
            select=sweep.select,
            candidates={c.id: SweepCandidate(recipe=c.recipe_path, params=c.params) for c in plan.candidates},
        )
        atomic_write(out / "sweep.json", meta.model_dump_json(indent=2) + "\n")
        write_reports(sweep.journal, out)
    finally:
        sweep.journal.close()
    return out / "best"
