"""`merge` stages: the best `top` candidates of the stage before, each merged again by the stage's mergekit config
(`@candidate`, `@parent`, `@top1`, ... naming earlier candidates: `config/refine.py`), one child per stage point.
Children that come out the same (a config that names no `@candidate`) are one child; the inputs are saved before
the merge (the planner does it) and kept while a stage needs them."""

from __future__ import annotations

from merger.config.recipe import Candidate
from merger.config.refine import merged_child, stage_points
from merger.sweep.stages import Host


def run(host: Host, groups: list[list[Candidate]], n: int) -> None:
    made: dict[str, Candidate] = {}
    for before in groups:
        stage = before[0].refine[n - 1]
        for refined in before[: stage.top]:
            for point in stage_points(stage):
                found = merged_child(refined, n, point, before, host.folder)
                if found is not None:
                    made.setdefault(found.id, found)
    host.score(list(made.values()))
