"""How a sweep picks what to score next. One module per strategy, named as `select.strategy` names it; each
defines `make(ids, select, limit, values, racing, prob, seed, estimate)` returning a `Strategy` (see `base.py`);
`racing` is the one stop rule they share (`racing.py`), `prob` the gold-choice probabilities and `seed` the eval
seed that break their ties (`selection.order`), `estimate` what ranks them instead of their mean, when given
(`strata.py`)."""

from __future__ import annotations

import importlib

from merger.config.recipe import SelectSettings
from merger.sweep.racing import Racing
from merger.sweep.strategies.base import Estimate, Strategy, ValuesOf


def make(
    ids: list[str],
    select: SelectSettings,
    limit: int | None,
    values: ValuesOf,
    racing: Racing,
    prob: ValuesOf | None = None,
    seed: int = 0,
    estimate: Estimate | None = None,
) -> Strategy:
    module = importlib.import_module(f"{__name__}.{select.strategy}")
    return module.make(ids, select, limit, values, racing, prob, seed, estimate)
