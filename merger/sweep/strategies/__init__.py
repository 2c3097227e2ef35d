"""How a sweep picks what to score next. One module per strategy, named as `select.strategy` names it; each
defines `make(ids, select, limit, scores, racing)` returning a `Strategy` (see `base.py`): `scores` is what it
reads to rank candidates (`base.Scores`), `racing` the one stop rule they share (`racing.py`)."""

from __future__ import annotations

import importlib

from merger.config.recipe import SelectSettings
from merger.sweep.racing import Racing
from merger.sweep.strategies.base import Scores, Strategy


def make(ids: list[str], select: SelectSettings, limit: int | None, scores: Scores, racing: Racing) -> Strategy:
    module = importlib.import_module(f"{__name__}.{select.strategy}")
    return module.make(ids, select, limit, scores, racing)
