"""What every step is: one leased piece of a candidate's work, as data (picklable, so an executor can ship it to
another process or machine), with a key built from its content and `run` returning a typed
`Outcome`. A step never touches the journal; the driver records what it returns (`record` says how)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

from pydantic import BaseModel

from merger.config.recipe import Candidate, input_models
from merger.config.results import ItemRow
from merger.core.device import release
from merger.core.errors import UserError
from merger.core.hf import is_model_folder, model_path

if TYPE_CHECKING:
    from merger.flow.workspace import Workspace


class Book(Protocol):
    """What a step may write when it is recorded: the driver's journal."""

    def start(self, cid: str, stage: str) -> float: ...

    def finish(self, cid: str, stage: str, started: float, **what) -> None: ...


@dataclass
class Outcome:
    """What a step returns to the driver, which alone writes it to the journal."""

    result: BaseModel | None = None
    path: Path | None = None
    items: list[ItemRow] = field(default_factory=list)
    counters: dict = field(default_factory=dict)  # the work it did (`workspace.Counters`), recorded in the journal


@dataclass(frozen=True)
class Step:
    candidate: Candidate
    stage: str  # its name in the journal

    kind: ClassVar[str]  # the step's name, also its module's
    makes_weights: ClassVar[bool] = False  # the workspace's kept models are dropped first: the memory is the step's

    @property
    def journal_id(self) -> str:
        """Who the journal records this step under: the candidate (a named merge: itself)."""
        return self.candidate.id

    @property
    def key(self) -> str:
        """Built from the step's content: the same work has the same key on any machine."""
        fields = {k: v for k, v in asdict(self).items() if k != "candidate"}
        blob = json.dumps([self.kind, self.candidate.id, fields], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        """How the dry run names it."""
        return self.kind

    def needs(self) -> list[Path]:
        """The folders earlier steps make that this one reads: the candidate's named merges and the earlier
        candidates it merges (a kind that reads another folder says so). The planner leases a step only once they
        are there, and `perform` refuses one whose folder is gone, in one line."""
        c = self.candidate
        made = [Path(named.path) for named in c.upstream]
        for ref in input_models(c.merge):
            folder = Path(model_path(ref))
            if folder.name == "model" and folder.parent.name in c.inputs:
                made.append(folder)
        return made

    def run(self, workspace: Workspace) -> Outcome:
        raise NotImplementedError

    def record(self, book: Book, outcome: Outcome, started: float) -> None:
        """Write the outcome: the step's own journal row (a kind with more to write says so)."""
        result = outcome.result.model_dump(mode="json") if outcome.result is not None else {}
        path = str(outcome.path) if outcome.path else None
        book.finish(self.journal_id, self.stage, started, path=path, result=result, items=outcome.items)


def perform(step: Step, workspace: Workspace) -> Outcome:
    """Do a step, on whatever process or machine it was sent to, with that worker's workspace; the work it did is
    counted in its outcome. GPU memory not kept by the workspace is given back when it ends (a trainer's reference
    cycles would otherwise keep it from the next step)."""
    missing = [folder for folder in step.needs() if not is_model_folder(folder)]
    if missing:
        raise UserError.one(
            str(missing[0]), f"{step.journal_id} {step.stage}", "not there (deleted?); run the sweep again to remake it"
        )
    before = workspace.snapshot()
    try:
        if step.makes_weights:
            workspace.drop()
        outcome = step.run(workspace)
    finally:
        release()
    outcome.counters = workspace.counters.since(before)
    return outcome
