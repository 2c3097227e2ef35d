"""Where a sweep's units run. One module per executor, named as `execute.executor` / `--executor` names it; each
defines `make(settings, out, device, lora_merge_cache)` returning an `Executor` (see `base.py`)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from merger.config.recipe import ExecuteSettings
from merger.core.errors import UserError
from merger.sweep.executors.base import Executor

NOT_EXECUTORS = {"base"}


def names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in NOT_EXECUTORS)


def check(settings: ExecuteSettings, file: str) -> None:
    if settings.executor not in names():
        raise UserError.one(
            file, "execute.executor", f"'{settings.executor}' is not an executor; there are: {', '.join(names())}"
        )


def make(settings: ExecuteSettings, out: Path, device: str, lora_merge_cache: Path | None, file: str) -> Executor:
    check(settings, file)
    module = importlib.import_module(f"{__name__}.{settings.executor}")
    return module.make(settings, out, device, lora_merge_cache)
