"""Who runs the model for lm-eval's requests (`eval.backend`), one module each, found by name as lm-eval registers its
model backends: `merger` (the fast scorer), `hf` and `vllm` (lm-eval's own). Each module says whether a sweep must
save a candidate for it to read (`NEEDS_FOLDER`: the planner puts a save step before its scores), what it lacks to
run here (`missing`: checked by `merger validate`), and makes the lm-eval model (`make`)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

from merger.config.recipe import EvalSettings
from merger.core.errors import UserError


def names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__))


def get(name: str, file: str = "eval.backend") -> ModuleType:
    if name not in names():
        raise UserError.one(file, "eval.backend", f"'{name}' is not a backend; there are: {', '.join(names())}")
    return importlib.import_module(f"{__name__}.{name}")


def live(name: str) -> bool:
    """Whether a sweep scores the candidate's live model with this backend (else it saves it and the backend reads
    its folder)."""
    return not get(name).NEEDS_FOLDER


def missing(name: str) -> str | None:
    """Why the backend cannot run here (its package not installed), or None."""
    return get(name).missing()


def make(
    settings: EvalSettings, model=None, tokenizer=None, folder: Path | None = None, device: str = "auto", encoders=None
):
    """The lm-eval model for `settings.backend`: over a live `model` and `tokenizer` when they are given (a backend
    that cannot take one says so), else over `folder`. `encoders`: merger's tokenizations of requests kept so far."""
    if model is None and folder is None:
        raise ValueError("a model or a folder to score")
    return get(settings.backend).make(settings, model, tokenizer, folder, device, encoders)
