"""`score`: items [offset, offset + limit) of a split's seeded order, scored on the workspace's live model (merged
in memory or loaded once per candidate, kept for its next rungs) with the tasks it keeps (built once per eval
settings). Each item's headline value is kept for selection; the first in-memory score of a candidate also records
the digest of the weights it scored, which its save step checks. Items the per-item cache holds for the same model
(by that digest, or a folder's) and task are read from it; a model on disk is loaded only when some are missing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from merger.config.results import ItemRow, Weights
from merger.evaluate import backends
from merger.evaluate.cache import live_model, runtime
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
    weights: str | None = None  # that digest, once recorded: the model's identity in the per-item cache

    @property
    def label(self) -> str:
        return "merge (in memory) -> eval" if self.folder is None else "eval"

    def needs(self) -> list[Path]:
        return [self.folder] if self.folder is not None else super().needs()

    def run(self, workspace) -> Outcome:
        settings, store = self.candidate.eval, workspace.items
        how = runtime(settings.backend, workspace.options.device) if store is not None else ""
        live, model, tokenizer, merged, identity = backends.live(settings.backend), None, None, None, None
        if self.folder is not None or not live:  # on disk: known by its files, loaded only if an item is missing
            identity = store.folder_model(self.folder, how) if store is not None else None
        else:  # merged in memory: known by the digest of the merged tensors
            model, tokenizer, merged = workspace.live(self.candidate, None, self.digest)
            weights = merged or self.weights
            identity = live_model(weights, model, tokenizer, how) if store is not None and weights else None
        made: list = []

        def lm():
            m, t = model, tokenizer
            if live and m is None:
                m, t, _ = workspace.live(self.candidate, self.folder, False)
            made.append(backends.make(settings, model=m, tokenizer=t, folder=self.folder, encoders=workspace.encoders))
            return made[-1]

        report = evaluate(
            lm, settings, limit=self.limit, offset=self.offset, prepared=workspace.tasks(settings), cache=store,
            model=identity,
        )  # fmt: skip
        workspace.counters.scoring_s += sum(getattr(x, "busy_s", 0.0) for x in made)
        cached = sum(t.cached for t in report.tasks.values())
        workspace.counters.items_cached += cached
        workspace.counters.items_scored += len(report.items) - cached
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
