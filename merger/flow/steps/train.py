"""`train`: one of a candidate's training steps, from the model before it (its merge, its previous step, or a
trained parent's model) into `folder`."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from merger.flow.steps.base import Book, Outcome, Step
from merger.flow.verbs import train_model


@dataclass(frozen=True)
class Train(Step):
    kind = "train"
    makes_weights = True
    folder: Path  # the step's output
    source: Path  # the model it trains
    step: int  # which of the candidate's training steps

    @property
    def label(self) -> str:
        return self.candidate.train[self.step].kind

    def needs(self) -> list[Path]:
        return [self.source]

    def run(self, workspace) -> Outcome:
        step = self.candidate.train[self.step]
        run = train_model(
            self.source, step.kind, step.settings, self.folder, device=workspace.options.device, force=True
        )
        return Outcome(run, self.folder)

    def record(self, book: Book, outcome: Outcome, started: float) -> None:
        super().record(book, outcome, started)
        if self.source.parent == self.folder.parent:  # its own input (not a parent's model) is no longer needed
            shutil.rmtree(self.source, ignore_errors=True)  # once the journal has its output
