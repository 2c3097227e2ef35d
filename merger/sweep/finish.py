"""A sweep's end, once every candidate is scored: the kept candidates' folders (keep-K; the others deleted, their
journal rows stay), `best/` (the winner hard-linked, with the journal's scores and a model card), `sweep.json` and
the reports."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from rich.console import Console

from merger.config.results import EvalSummary, Scores, SweepMeta, TaskResult, TaskScore
from merger.core.atomic import atomic_output_dir, atomic_write
from merger.evaluate.evaluator import stderr
from merger.publish.card import write_card
from merger.sweep.journal import Journal
from merger.sweep.leaderboard import decide, write_reports

console = Console(stderr=True)


def prune(out: Path, ids: list[str], kept: list[str]) -> None:
    """Delete the folders of the candidates `ids` not kept (their journal rows stay)."""
    for cid in ids:
        if cid not in kept and (out / "candidates" / cid).exists():
            shutil.rmtree(out / "candidates" / cid)


def task_result(score: TaskScore, values: list[float]) -> TaskResult:
    """A published score from per-item values, with the task's facts from its eval summary."""
    return TaskResult.of(score, sum(values) / len(values), stderr(values), len(values))


def scores(journal: Journal, out: Path, cid: str, counted: int | None) -> Scores:
    """The winner's published scores: from the report items when there are some, else the selection items its rank
    counted."""
    split = "report" if journal.item_values(cid, "report") else "select"
    below = counted if split == "select" else None
    facts: dict[str, TaskScore] = {}
    for result in journal.results(cid, f"eval-{split}-"):
        facts.update(EvalSummary.model_validate(result).tasks)
    return Scores(
        items=split,
        sweep=str(out),
        candidate=cid,
        tasks={
            task: task_result(facts[task], list(v.values()))
            for task, v in journal.item_values(cid, split, below).items()
        },
    )


def publish_best(journal: Journal, out: Path, winner: str, counted: int | None) -> None:
    """DIR/best: the winner's folder, hard-linked where the filesystem allows (no second copy of weights), with the
    journal's scores and a model card."""
    source = out / "candidates" / winner / "model"  # kept: saved, or trained
    with atomic_output_dir(out / "best", replace=True) as tmp:
        for f in source.iterdir():
            if f.name == "README.md":
                continue
            try:
                os.link(f, tmp / f.name)
            except OSError:
                shutil.copy2(f, tmp / f.name)
        for warning in write_card(tmp, name=f"{out.name}-{winner}", scores=scores(journal, out, winner, counted)):
            console.print(f"[yellow]warning:[/yellow] {warning}")


def write_meta(journal: Journal, out: Path, meta: SweepMeta) -> None:
    """sweep.json (with its decision, decided once) and the reports drawn from it."""
    meta.decision = decide(journal, meta)
    atomic_write(out / "sweep.json", meta.model_dump_json(indent=2) + "\n")
    write_reports(journal, out, meta)
