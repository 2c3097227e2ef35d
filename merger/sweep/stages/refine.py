"""Refine stage n: per recipe, the best `top` candidates of stage n - 1 (among those that may be kept), each trained
further into a child (`recipe.child`)."""

from __future__ import annotations

from merger.config.recipe import Candidate, child


def children(ranked: list[Candidate], stage: int) -> list[Candidate]:
    """`ranked`: the candidates that may be kept, best first."""
    found = []
    for recipe in dict.fromkeys(c.recipe_path for c in ranked):
        before = [c for c in ranked if c.recipe_path == recipe and c.stage == stage - 1 and len(c.refine) >= stage]
        found += [child(c, stage) for c in before[: before[0].refine[stage - 1].top]] if before else []
    return found
