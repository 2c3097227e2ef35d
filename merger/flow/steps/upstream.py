"""`upstream`: one of a candidate's named merges (`upstream:` in the recipe), written to its folder, named by its
content; a node of the journal of its own, made once however many candidates take it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from merger.flow.steps.base import Outcome, Step
from merger.merge.run import make_named


@dataclass(frozen=True)
class Upstream(Step):
    kind = "upstream"
    makes_weights = True
    folder: Path  # the named merge's folder; its name is its journal node
    name: str  # its name in the recipe

    @property
    def journal_id(self) -> str:
        return self.folder.name

    @property
    def label(self) -> str:
        return self.name

    def needs(self) -> list[Path]:
        """The named merges made before this one (it may take them); not the candidate's own inputs."""
        names = [named.name for named in self.candidate.upstream]
        return [Path(named.path) for named in self.candidate.upstream[: names.index(self.name)]]

    def run(self, workspace) -> Outcome:
        o = workspace.options
        return Outcome(path=make_named(self.candidate, self.name, o.device, o.trust_remote_code, o.lora_merge_cache))
