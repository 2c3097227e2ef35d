"""`train` stages: the best `top` candidates of the stage before, each trained further into a child
(`recipe.child`)."""

from __future__ import annotations

from merger.config.recipe import Candidate, child
from merger.sweep.stages import Host


def run(host: Host, groups: list[list[Candidate]], n: int) -> None:
    host.score([child(c, n) for before in groups for c in before[: before[0].refine[n - 1].top]])
