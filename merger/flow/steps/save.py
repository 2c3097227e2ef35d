"""`save`: a candidate's weights written to disk (a kept one, or one that must be scored from disk), checked to be
the very ones it was scored with when it was scored in memory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from merger.config.results import Weights
from merger.core.digest import folder_digest
from merger.core.errors import UserError
from merger.flow.steps.base import Outcome, Step
from merger.flow.verbs import materialize


@dataclass(frozen=True)
class Save(Step):
    kind = "save"
    makes_weights = True
    folder: Path  # the candidate's model folder
    scored: str | None = None  # the digest of the weights it was scored with (None: not scored in memory)

    def run(self, workspace) -> Outcome:
        materialize(self.candidate, self.folder, workspace.options)
        if self.scored is None:  # scored from disk: the saved folder is the one scored
            return Outcome(Weights(), self.folder)
        digest = folder_digest(self.folder)
        if self.scored != digest:
            raise UserError.one(
                str(self.folder),
                self.candidate.id,
                f"the weights saved differ from the weights scored ({digest[:12]} != {self.scored[:12]}); "
                "the saved model is not the one on the leaderboard",
            )
        return Outcome(Weights(digest=digest, checked_against_scored=True), self.folder)
