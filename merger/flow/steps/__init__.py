"""The kinds of step a candidate's work is made of, one module each (`upstream`, `merge`, `train`, `score`, `save`),
found here as executors are: a new kind is a new file defining one `base.Step` subclass whose `kind` is the module's
name. `plan.py` decides which a candidate needs next."""

from __future__ import annotations

import importlib
import pkgutil

from merger.flow.steps.base import Outcome, Step, perform

NOT_KINDS = {"base"}

__all__ = ["Outcome", "Step", "kinds", "perform"]


def kinds() -> dict[str, type[Step]]:
    """Every step kind of the package, by name."""
    found: dict[str, type[Step]] = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name in NOT_KINDS:
            continue
        loaded = importlib.import_module(f"{__name__}.{module.name}")
        found.update(
            (obj.kind, obj)
            for obj in vars(loaded).values()
            if isinstance(obj, type) and issubclass(obj, Step) and obj.__module__ == loaded.__name__
        )
    return found
