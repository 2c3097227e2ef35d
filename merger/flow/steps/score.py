"""`score`: items [offset, offset + limit) of a split's seeded order, scored on the workspace's live model (merged
in memory or loaded once per candidate, kept for its next rungs) with the tasks it keeps (built once per eval
settings). Each item's headline value is kept for selection; the first in-memory score of a candidate also records
the digest of the weights it scored, which its save step checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from merger.config.results import ItemRow, Weights
from merger.evaluate import backends
from merger.evaluate.evaluator import evaluate
from merger.flow.steps.base import Book, Outcome, Step

WEIGHTS = "scored-weights"  # the journal stage holding the digest of the weights a candidate was scored with


@dataclass(frozen=True)
class Score(Step):
    kind = "score"
    folder: Path | None  # the model's folder when it is scored from disk; None: merged in memory
    split: str = "select"
    limit: int | None = None
    offset: int = 0
    digest: bool = False  # also record the digest of the weights merged in memory

    @property
    def label(self) -> str:
        return "merge (in memory) -> eval" if self.folder is None else "eval"

    def run(self, workspace) -> Outcome:
        settings = self.candidate.eval
        model = tokenizer = merged = None
        if backends.live(settings.backend):
            model, tokenizer, merged = workspace.live(self.candidate, self.folder, self.digest)
        lm = backends.make(settings, model=model, tokenizer=tokenizer, folder=self.folder, encoders=workspace.encoders)
        report = evaluate(lm, settings, limit=self.limit, offset=self.offset, prepared=workspace.tasks(settings))
        workspace.counters.scoring_s += getattr(lm, "busy_s", 0.0)
        items = [
            ItemRow(
                split=self.split,
                task=item.task,
                item=item.id,
                position=item.position,
                value=item.metrics[report.tasks[item.task].primary],
                signal=item.signal,
                record=item,
            )
            for item in report.items
        ]
        return Scored(report.summary(), None, items, weights=merged if self.digest else None)

    def record(self, book: Book, outcome: Outcome, started: float) -> None:
        weights = getattr(outcome, "weights", None)
        if weights is not None:
            book.finish(self.journal_id, WEIGHTS, book.start(self.journal_id, WEIGHTS), result=Weights(digest=weights))
        super().record(book, outcome, started)


@dataclass
class Scored(Outcome):
    weights: str | None = None  # the digest of the weights scored in memory, when asked for
