"""`grid`: every candidate on every selection item; with `select.race` and an `eval.limit`, raced:
scored in growing slices, each candidate stopping once shown worse than the leader and the sweep once the leader is
within delta of every other (`halving.Halving` without its cut)."""

from __future__ import annotations

from merger.config.recipe import SelectSettings
from merger.sweep.racing import Racing
from merger.sweep.strategies.base import Estimate, Fixed, Goal, ValuesOf, rungs
from merger.sweep.strategies.halving import Halving


def make(
    ids: list[str],
    select: SelectSettings,
    limit: int | None,
    values: ValuesOf,
    racing: Racing,
    prob: ValuesOf | None = None,
    seed: int = 0,
    estimate: Estimate | None = None,
):
    """The first slice is `min_items` (default limit / eta^2), but never fewer than a look needs to decide
    anything (`Racing.earliest`): a race too short for that scores every candidate on every item at once."""
    first = max(select.min_items or (limit or 0) // select.eta**2, racing.earliest())
    if not select.race or limit is None or first >= limit or len(ids) < 2:
        return Fixed([Goal(cid, limit=limit) for cid in ids])
    rungs_ = rungs(first, select.eta, limit)
    return Halving(ids, select, rungs_, values, racing, cut=False, prob=prob, seed=seed, estimate=estimate)
