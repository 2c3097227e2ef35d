"""The work a sweep does to one candidate, as plain functions of their inputs: merge it, train it, score it.

Each returns a typed result and never touches the journal; the driver (`run.py`) records what they return.
A `Unit` is one such piece of work as data (picklable, so an executor can ship it to another process or machine),
and `perform` does it wherever it lands. `train_model` is also `merger train` and `merger dpo`: it wires the eval
stage's test items into the training stage's contamination check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from merger.config.recipe import Candidate, EvalSettings
from merger.config.results import EvalSummary, ItemRow, TaskResult, TaskScore, TrainRun
from merger.config.train import TrainSettings
from merger.core.device import release
from merger.core.errors import UserError
from merger.evaluate.documents import reference_texts
from merger.evaluate.evaluator import evaluate, make_lm, stderr
from merger.merge.run import folder_digest, make_named, merge_to_disk
from merger.sweep.plan import check_disk
from merger.sweep.workspace import Workspace
from merger.train.run import train
from merger.train.sft import kind_of


def train_model(
    model_dir: Path,
    kind: str | None,
    settings: TrainSettings,
    out: Path,
    *,
    device: str = "auto",
    force: bool = False,
    show_progress: bool = True,
) -> TrainRun:
    """Train `model_dir` into `out` (`kind`: pretrain, sft or dpo; None: pretrain or sft, as the data is plain text
    or chat), the rows checked against the eval tasks' items."""
    kind = kind or kind_of(settings.data)
    references = reference_texts(settings.against, settings.data_dir, settings.include_path)
    return train(model_dir, kind, settings, out, references, device=device, force=force, show_progress=show_progress)


def materialize(candidate: Candidate, target: Path, device: str, lora_merge_cache: Path | None = None) -> Path:
    """The candidate's merge, written to `target` (checked for disk space first)."""
    check_disk(candidate, target.parent)
    return merge_to_disk(candidate, target, device=device, force=True, quiet=True, lora_merge_cache=lora_merge_cache)


def score(
    workspace: Workspace,
    candidate: Candidate,
    folder: Path | None,
    settings: EvalSettings,
    split: str,
    limit: int | None,
    offset: int,
    digest: bool = False,
) -> tuple[EvalSummary, list[ItemRow], str | None]:
    """Items [offset, offset + limit) of the seeded order, scored on the workspace's live model (merged or loaded
    once per candidate) with its tasks (built once per eval settings); each item's headline value for selection, and
    (with `digest`) the digest of the weights scored when they were merged in memory."""
    model, tokenizer, merged = workspace.live(candidate, folder, digest)
    lm = make_lm(settings, model=model, tokenizer=tokenizer, encoders=workspace.encoders)
    prepared = workspace.tasks(settings.model_dump_json(), settings)
    report = evaluate(lm, settings, limit=limit, offset=offset, prepared=prepared)
    workspace.counters.scoring_s += getattr(lm, "busy_s", 0.0)
    items = [
        ItemRow(
            split=split,
            task=item.task,
            item=item.id,
            position=item.position,
            value=item.metrics[report.tasks[item.task].primary],
            signal=item.signal,
            record=item,
        )
        for item in report.items
    ]
    return report.summary(), items, merged if digest else None


def save(candidate: Candidate, target: Path, device: str, scored: str | None, lora_merge_cache: Path | None) -> dict:
    """Write a kept candidate's weights, and check they are the very ones it was scored with (digest `scored`)."""
    materialize(candidate, target, device, lora_merge_cache)
    if scored is None:  # scored from disk: the saved folder is the one scored
        return {"digest": None, "checked_against_scored": False}
    digest = folder_digest(target)
    if scored != digest:
        raise UserError.one(
            str(target),
            candidate.id,
            f"the weights saved differ from the weights scored ({digest[:12]} != {scored[:12]}); "
            "the saved model is not the one on the leaderboard",
        )
    return {"digest": digest, "checked_against_scored": True}


@dataclass(frozen=True)
class Unit:
    """One leased piece of a sweep's work: a candidate's journal stage, and what doing it needs."""

    candidate: Candidate
    stage: str  # its name in the journal
    job: Literal["upstream", "merge", "train", "score", "save"]
    folder: Path | None = None  # merge/save/train: the target; score: the model's, if on disk
    split: str = "select"  # score: which items
    limit: int | None = None
    offset: int = 0
    digest: bool = False  # score: also return the digest of weights merged in memory
    scored: str | None = None  # save: the digest the candidate was scored with
    source: Path | None = None  # train: the model trained
    step: int = 0  # train: which of the candidate's training steps
    node: str | None = None  # upstream: the named merge's journal name (its folder's)
    name: str | None = None  # upstream: its name in the recipe

    @property
    def journal_id(self) -> str:
        """Who the journal records this unit under: the candidate, or the named merge it makes."""
        return self.node or self.candidate.id


@dataclass
class Outcome:
    """What a unit returns to the driver, which alone writes it to the journal."""

    result: Any
    path: Path | None = None
    items: list[ItemRow] = field(default_factory=list)
    digest: str | None = None  # score: the scored weights' digest, when asked for
    counters: dict = field(default_factory=dict)  # the work it did (`workspace.Counters`), recorded in the journal


def perform(unit: Unit, workspace: Workspace) -> Outcome:
    """Do a unit, on whatever process or machine it was sent to, with that worker's workspace; the work it did is
    counted in its outcome. GPU memory not kept by the workspace is given back when it ends (a trainer's reference
    cycles would otherwise keep it from the next unit)."""
    before = workspace.snapshot()
    try:
        outcome = _perform(unit, workspace)
    finally:
        release()
    outcome.counters = workspace.counters.since(before)
    return outcome


def _perform(unit: Unit, workspace: Workspace) -> Outcome:
    c, device, lora_merge_cache = unit.candidate, workspace.options.device, workspace.options.lora_merge_cache
    if unit.job in ("upstream", "merge", "train"):  # work that makes new weights: the memory is theirs
        workspace.drop()
    if unit.job == "upstream":
        return Outcome({}, make_named(c, unit.name, device, lora_merge_cache=lora_merge_cache))
    if unit.job == "merge":
        return Outcome({}, materialize(c, unit.folder, device, lora_merge_cache))
    if unit.job == "train":
        step = c.train[unit.step]
        run = train_model(unit.source, step.kind, step.settings, unit.folder, device=device, force=True)
        return Outcome(run, unit.folder)
    if unit.job == "save":
        return Outcome(save(c, unit.folder, device, unit.scored, lora_merge_cache), unit.folder)
    summary, items, digest = score(workspace, c, unit.folder, c.eval, unit.split, unit.limit, unit.offset, unit.digest)
    return Outcome(summary, None, items, digest)


def task_result(score: TaskScore, values: list[float]) -> TaskResult:
    """A published score from per-item values, with the task's facts from its eval summary."""
    return TaskResult.of(score, sum(values) / len(values), stderr(values), len(values))
