"""`merge`: a candidate's merge written to disk, the start of its training steps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from merger.flow.steps.base import Outcome, Step
from merger.flow.verbs import materialize


@dataclass(frozen=True)
class Merge(Step):
    kind = "merge"
    makes_weights = True
    folder: Path  # where the merged model is written

    def run(self, workspace) -> Outcome:
        return Outcome(path=materialize(self.candidate, self.folder, workspace.options))
