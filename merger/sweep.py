"""`merger sweep`: every candidate of every recipe through merge -> optional DPO -> eval, journaled, resumable.

Candidates without DPO are merged in memory and scored live; only the kept ones are written to disk.
Every stage is recorded in the journal when it finishes, so a rerun skips finished work and redoes only
the stage that was interrupted.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

from rich.console import Console

from merger.atomic import atomic_output_dir
from merger.errors import UserError
from merger.journal import Journal
from merger.recipe import Candidate, EvalSettings, SelectSettings, output_layers
from merger.selection import Ranked, rank

console = Console(stderr=True)


def sweep_settings(candidates: list[Candidate]) -> tuple[EvalSettings, SelectSettings]:
    """One sweep, one yardstick: every recipe must score on the same items and select the same way."""
    first = candidates[0]
    for c in candidates[1:]:
        for name in ("eval", "select"):
            if getattr(c, name) != getattr(first, name):
                raise UserError.one(c.recipe_path, name, f"differs from {first.recipe_path}'s; candidates of one "
                                    "sweep must be scored and selected alike")
    if first.select.metric not in ("mean", *first.eval.tasks):
        raise UserError.one(first.recipe_path, "select.metric", f"'{first.select.metric}' is neither 'mean' nor "
                            f"one of the eval tasks ({', '.join(first.eval.tasks)})")
    if first.select.strategy == "halving" and first.eval.limit is None:
        raise UserError.one(first.recipe_path, "eval.limit", "halving needs a limit to halve")
    if first.select.report_items and first.eval.limit is None:
        raise UserError.one(first.recipe_path, "eval.limit", "report_items needs a limit (the items left over)")
    return first.eval, first.select


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:8]


def weights_bytes(candidate: Candidate) -> int:
    """A merge writes about as much as its largest input, scaled by the layers it stacks."""
    from merger.model_info import inspect_model, model_path
    from merger.validate import model_refs

    largest, layers_in = 0, 1
    for _, ref in model_refs(candidate.merge):
        path = Path(model_path(ref))
        if path.is_dir():
            size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
            if size > largest:
                largest, layers_in = size, inspect_model(ref).num_layers
    layers_out = output_layers(candidate.merge)
    return int(largest * max(1.0, layers_out / layers_in if layers_out else 1.0))


def _check_disk(candidate: Candidate, folder: Path) -> None:
    needed = weights_bytes(candidate)
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if needed * 1.1 > free:
        raise UserError.one(str(folder), "disk", f"candidate {candidate.id} needs about {needed / 1e9:.1f} GB, "
                            f"only {free / 1e9:.1f} GB free")


class Sweep:
    def __init__(self, candidates: list[Candidate], out: Path, device: str, keep: int | None):
        self.candidates = {c.id: c for c in candidates}
        self.out = Path(out)
        self.device = device
        self.eval, self.select = sweep_settings(candidates)
        self.keep = keep or self.select.keep
        self.journal = Journal(self.out)
        for c in candidates:
            self.journal.add_candidate(c.id, c.recipe_path, c.params, {"merge": c.merge, "dpo": c.dpo})

    def folder(self, cid: str) -> Path:
        return self.out / "candidates" / cid

    # stages -----------------------------------------------------------------------------------
    def _stage(self, c: Candidate, name: str, work, redo: bool = False) -> dict:
        """Run `work()` as a journaled stage unless it already finished; returns its result.

        `redo` reruns a finished stage whose output is gone (weights deleted by an earlier --keep).
        """
        if self.journal.done(c.id, name) and not redo:
            return self.journal.stage(c.id, name)["result"]
        console.print(f"[bold]{c.id}[/bold] {name} ...")
        started = self.journal.start(c.id, name)
        result, path, items = work()
        self.journal.finish(c.id, name, started, path=str(path) if path else None, result=result, items=items)
        console.print(f"[bold]{c.id}[/bold] {name} [green]done[/green]")
        return result

    def model_folder(self, c: Candidate) -> Path | None:
        """Candidates with DPO live on disk (merged, then refined); others only once saved."""
        from merger.dpo import DPOSettings, run_dpo
        from merger.merging import merge_to_disk

        if c.dpo is None:
            saved = self.folder(c.id) / "model"
            return saved if self.journal.done(c.id, "save") and (saved / "config.json").exists() else None
        merged, refined = self.folder(c.id) / "merged", self.folder(c.id) / "model"
        gone = self.journal.done(c.id, "dpo") and not (refined / "config.json").exists()

        def merge():
            _check_disk(c, merged.parent)
            merge_to_disk(c, merged, device=self.device, force=True, quiet=True)
            return {}, merged, None

        def dpo():
            settings = DPOSettings.parse(c.dpo, c.recipe_path)
            run_dpo(merged, settings, refined, device=self.device, force=True)
            shutil.rmtree(merged, ignore_errors=True)
            return json.loads((refined / "merger_dpo.json").read_text()), refined, None

        if gone or not self.journal.done(c.id, "dpo"):
            self._stage(c, "merge", merge, redo=gone)
        self._stage(c, "dpo", dpo, redo=gone)
        return refined

    def live(self, c: Candidate):
        from merger.evaluate.model import load_model
        from merger.merging import merge_in_memory

        folder = self.model_folder(c)
        if folder is not None:
            return load_model(folder, self.device)
        return merge_in_memory(c, device=self.device)

    def score(self, c: Candidate, split: str, limit: int | None, offset: int = 0) -> None:
        """Score items [offset, offset + limit) of the seeded shuffle; a finished slice is never rescored."""
        from merger.evaluate.evaluator import evaluate
        from merger.evaluate.tasks import TASKS

        name = f"eval-{split}-{_key(self.eval.model_dump())}-{offset}-{limit}"

        def work():
            model, tokenizer = self.live(c)
            report = evaluate(model, tokenizer, self.eval.tasks, limit=limit, offset=offset, seed=self.eval.seed,
                              num_fewshot=self.eval.num_fewshot, data=self.eval.data_dir)
            items = []
            for position, item in enumerate(report.items):
                primary = report.tasks[item.task].primary
                value = getattr(item, TASKS[item.task].item_metric.get(primary, primary))
                items.append((split, item.task, item.id, offset + position, float(value), item.model_dump()))
            return report.summary(), None, items

        self._stage(c, name, work)

    def save(self, c: Candidate) -> None:
        from merger.merging import merge_to_disk

        if c.dpo is not None:
            return

        target = self.folder(c.id) / "model"

        def work():
            _check_disk(c, target.parent)
            merge_to_disk(c, target, device=self.device, force=True, quiet=True)
            return {}, target, None

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
        rung = self.select.min_items or max(1, limit // (self.select.eta ** 2))
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

    def scores(self, cid: str):
        """The winner's published scores: from the report items when there are some, else the selection items."""
        from merger.card import Scores, TaskResult
        from merger.evaluate.evaluator import stderr
        from merger.evaluate.tasks import TASKS

        split = "report" if self.journal.item_values(cid, "report") else "select"
        values = self.journal.item_values(cid, split)
        shots = {}
        for result in self.journal.results(cid, f"eval-{split}-"):
            shots.update({t: v["num_fewshot"] for t, v in result["tasks"].items()})
        return Scores(items=split, sweep=str(self.out), candidate=cid, tasks={
            task: TaskResult(metric=TASKS[task].primary, value=sum(v.values()) / len(v),
                             stderr=stderr(list(v.values())), n=len(v), num_fewshot=shots.get(task, 0))
            for task, v in values.items()})

    def publish_best(self, winner: Candidate) -> None:
        """DIR/best: the winner's folder, hard-linked where the filesystem allows (no second copy of weights),
        with the journal's scores and a model card."""
        from merger.card import write_card

        source = self.model_folder(winner) or self.folder(winner.id) / "model"
        with atomic_output_dir(self.out / "best", replace=True) as tmp:
            for f in source.iterdir():
                if f.name == "README.md":
                    continue
                try:
                    os.link(f, tmp / f.name)
                except OSError:
                    shutil.copy2(f, tmp / f.name)
            (tmp / "merger_scores.json").write_text(self.scores(winner.id).model_dump_json(indent=2) + "\n")
            for warning in write_card(tmp, name=f"{self.out.name}-{winner.id}"):
                console.print(f"[yellow]warning:[/yellow] {warning}")


def run_sweep(candidates: list[Candidate], out: Path, *, device: str = "auto", keep: int | None = None) -> Path:
    from merger.leaderboard import write_reports

    sweep = Sweep(candidates, out, device, keep)
    try:
        sweep.run()
        (Path(out) / "sweep.json").write_text(json.dumps({
            "metric": sweep.select.metric, "eval": sweep.eval.model_dump(), "select": sweep.select.model_dump(),
            "candidates": {c.id: {"recipe": c.recipe_path, "params": c.params} for c in candidates},
        }, indent=2, default=str) + "\n")
        write_reports(sweep.journal, Path(out))
    finally:
        sweep.journal.close()
    return Path(out)
