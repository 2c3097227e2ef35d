"""`grid`: every candidate on every selection item; with `select.race` and an `eval.limit`, raced:
scored in growing slices, each candidate stopping once shown worse than the leader and the sweep once the leader is
within delta of every other (`halving.Halving` without its cut)."""

from __future__ import annotations

from merger.config.recipe import SelectSettings
from merger.sweep.racing import Racing
from merger.sweep.strategies.base import Fixed, Goal, Scores, rungs
from merger.sweep.strategies.halving import Halving


def make(ids: list[str], select: SelectSettings, limit: int | None, scores: Scores, racing: Racing):
    """The first slice is `min_items` (default limit / eta^2), but never fewer than a look needs to decide
    anything (`Racing.earliest`): a race too short for that scores every candidate on every item at once."""
    first = max(select.min_items or (limit or 0) // select.eta**2, racing.earliest())
    if not select.race or limit is None or first >= limit or len(ids) < 2:
        return Fixed([Goal(cid, limit=limit) for cid in ids])
    return Halving(ids, select, rungs(first, select.eta, limit), scores, racing, cut=False)
