"""`grid`: every candidate on every selection item."""

from __future__ import annotations

from merger.config.recipe import SelectSettings
from merger.sweep.strategies.base import Fixed, Goal, ValuesOf


def make(ids: list[str], select: SelectSettings, limit: int | None, values: ValuesOf) -> Fixed:
    return Fixed([Goal(cid, limit=limit) for cid in ids])
