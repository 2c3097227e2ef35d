"""How a sweep picks what to score next. One module per strategy, named as `select.strategy` names it; each
defines `make(ids, select, limit, values)` returning a `Strategy` (see `base.py`)."""

from __future__ import annotations

import importlib

from merger.config.recipe import SelectSettings
from merger.sweep.strategies.base import Strategy, ValuesOf


def make(ids: list[str], select: SelectSettings, limit: int | None, values: ValuesOf) -> Strategy:
    module = importlib.import_module(f"{__name__}.{select.strategy}")
    return module.make(ids, select, limit, values)
