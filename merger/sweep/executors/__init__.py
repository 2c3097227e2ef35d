"""Where a sweep's steps run. One module per executor, named as `execute.executor` / `--executor` names it; each
defines `make(settings, out, options)` returning an `Executor` (see `base.py`)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from merger.config.recipe import ExecuteSettings
from merger.core.errors import UserError
from merger.flow.options import RunOptions
from merger.sweep.executors.base import Executor

NOT_EXECUTORS = {"base"}


def names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in NOT_EXECUTORS)


def check(settings: ExecuteSettings, file: str) -> None:
    """The executor named exists (checked once, by the sweep's plan, before any work)."""
    if settings.executor not in names():
        raise UserError.one(
            file, "execute.executor", f"'{settings.executor}' is not an executor; there are: {', '.join(names())}"
        )


def make(settings: ExecuteSettings, out: Path, options: RunOptions, file: str) -> Executor:
    """The executor `execute.executor` names (`check`ed by the plan)."""
    module = importlib.import_module(f"{__name__}.{settings.executor}")
    return module.make(settings, out, options)
