"""The stage policy as data: from what the journal says is done, the next step a candidate needs to reach a goal.

A strategy asks for goals (a candidate scored on a slice of items, or its weights kept); `Planner.next_step` says
which step gets there next (its named merges, its merge and training steps, a save before a backend that needs a
folder, the score), or None once the journal has it. It runs nothing, so the policy is tested with a fake journal in
milliseconds, and `outline` (the dry run) is the same policy run against a journal where each step succeeds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from merger.config.recipe import Candidate
from merger.config.results import StageRow
from merger.core.hf import is_model_folder
from merger.evaluate import backends
from merger.flow.steps.base import Step
from merger.flow.steps.merge import Merge
from merger.flow.steps.save import Save
from merger.flow.steps.score import WEIGHTS, Score
from merger.flow.steps.train import Train
from merger.flow.steps.upstream import Upstream
from merger.merge.run import in_memory_supported


@dataclass(frozen=True)
class Goal:
    """A candidate scored on items [offset, offset + limit) of a split's seeded order (or, `save`, its weights kept)."""

    cid: str
    kind: Literal["score", "save"] = "score"
    split: str = "select"
    offset: int = 0
    limit: int | None = None
    candidate: Any = field(default=None, compare=False)  # a Candidate the driver has not seen yet (a search's)


class Progress(Protocol):
    """What the planner reads of the journal."""

    def done(self, cid: str, stage: str) -> bool: ...

    def stage(self, cid: str, stage: str) -> StageRow | None: ...


@dataclass
class Planner:
    out: Path  # the sweep folder
    eval_key: str  # names the scoring stages: other eval settings, other stages
    candidates: dict[str, Candidate]
    progress: Progress
    exists: Callable[[Path], bool] = is_model_folder  # whether a finished step's output is still there

    def folder(self, cid: str) -> Path:
        return self.out / "candidates" / cid

    def score_stage(self, goal: Goal) -> str:
        return f"eval-{goal.split}-{self.eval_key}-{goal.offset}-{goal.limit}"

    def chain(self, c: Candidate) -> list[tuple[str, str, Path, int | None]]:
        """A trained candidate's stages as (candidate, stage, output folder, index of its training step): the merge,
        then each training step, the last writing the candidate's model. A refined child of a trained parent starts
        from the parent's model (while it is there) and runs only its own steps."""
        parent = self.candidates.get(c.parent) if c.parent else None
        own = self.folder(c.id)
        head = self.chain(parent)[-1] if parent is not None and parent.train else None
        if head is not None and self.progress.done(head[0], head[1]) and self.exists(head[2]):
            stages, first = [head], len(parent.train)
        else:
            stages, first = [(c.id, "merge", own / "merged", None)], 0
        for index in range(first, len(c.train)):
            folder = own / ("model" if index == len(c.train) - 1 else f"step-{index + 1}")
            stages.append((c.id, f"train-{index + 1}-{c.train[index].kind}", folder, index))
        return stages

    def next_step(self, goal: Goal) -> Step | None:
        """The next step `goal` needs (its model first: named merges, the earlier candidates it merges, its merge and
        training steps, or saved weights), or None once the journal has it. A finished step whose output is gone
        (deleted by an earlier --keep, or a step's input removed once the step was done) is redone from the last
        output still there."""
        c, done = self.candidates[goal.cid], self.progress.done
        model = self.folder(c.id) / "model"
        score = self.score_stage(goal)
        if goal.kind == "score" and done(c.id, score):
            return None
        if c.reference:  # an input model, scored as it is
            return Score(c, score, Path(c.reference), goal.split, goal.limit, goal.offset)
        if goal.kind == "save" or c.train:
            if (step := self.to_disk(c)) is not None or goal.kind == "save":
                return step
        elif (step := self.inputs(c)) is not None:
            return step
        saved = done(c.id, "save") and self.exists(model)
        if not c.train and not saved and not (in_memory_supported(c) and backends.live(c.eval.backend)):
            return Save(c, "save", model)  # vocabulary surgery, or a backend that reads folders: scored from disk
        on_disk = bool(c.train) or saved
        digest = not on_disk and not done(c.id, WEIGHTS)
        known = self.progress.stage(c.id, WEIGHTS) if not on_disk and not digest else None
        weights = known.result.get("digest") if known is not None and known.result else None
        return Score(c, score, model if on_disk else None, goal.split, goal.limit, goal.offset, digest, weights)

    def inputs(self, c: Candidate) -> Step | None:
        """The next step of what `c` merges that is not on disk yet: its named merges (each a node of the journal,
        under its folder's name), then the earlier candidates it merges (each saved, or trained, first)."""
        done = self.progress.done
        for named in c.upstream:
            if not (done(Path(named.path).name, "merge") and self.exists(Path(named.path))):
                return Upstream(c, "merge", Path(named.path), named.name)
        for cid in c.inputs:
            if (step := self.to_disk(self.candidates[cid])) is not None:
                return step
        return None

    def to_disk(self, c: Candidate) -> Step | None:
        """The next step that puts `c`'s model in its folder (its inputs, its merge and training steps, or a save,
        checked against the weights it was scored with), or None once it is there."""
        if (step := self.inputs(c)) is not None:
            return step
        done = self.progress.done
        if c.train:
            chain = self.chain(c)
            ready = max(
                (i for i, (cid, stage, out, _) in enumerate(chain) if done(cid, stage) and self.exists(out)), default=-1
            )
            if ready == -1:
                return Merge(c, "merge", self.folder(c.id) / "merged")
            if ready < len(chain) - 1:
                _, stage, folder, step = chain[ready + 1]
                return Train(c, stage, folder, chain[ready][2], step)
            return None
        model = self.folder(c.id) / "model"
        if done(c.id, "save") and self.exists(model):
            return None
        scored = self.progress.stage(c.id, WEIGHTS)
        return Save(c, "save", model, scored.result["digest"] if scored and scored.result else None)


class Rehearsal:
    """A journal where every step leased succeeds: what `outline` plans against."""

    def __init__(self):
        self.finished: set[tuple[str, str]] = set()
        self.made: set[Path] = set()

    def done(self, cid: str, stage: str) -> bool:
        return (cid, stage) in self.finished

    def stage(self, cid: str, stage: str) -> StageRow | None:
        return None

    def succeed(self, step: Step) -> None:
        self.finished.add((step.journal_id, step.stage))
        if getattr(step, "folder", None) is not None:
            self.made.add(step.folder)


def outline(candidates: list[Candidate], out: Path, goal: Callable[[Candidate], Goal]) -> dict[str, list[Step]]:
    """Each candidate's steps to its goal from nothing done, in the order the driver would lease them (nothing is
    run; a named merge two candidates share is made once, but shown in both)."""
    found: dict[str, list[Step]] = {}
    for c in candidates:
        rehearsal = Rehearsal()
        planner = Planner(out, "plan", {c.id: c for c in candidates}, rehearsal, lambda p, r=rehearsal: p in r.made)
        steps = found.setdefault(c.id, [])
        while (step := planner.next_step(goal(c))) is not None:
            steps.append(step)
            rehearsal.succeed(step)
    return found
