"""Candidates a sweep makes after its first stage, one module each. A `refine:` stage's kind names its module
(`train`: the best of the stage before trained further; `merge`: merged again, with each other or other models;
`soup`: a greedy soup of them), which defines `run(host, groups, n)`: `groups` are the stage before's candidates to
refine, best first, one list per recipe. `references` adds the merges' input models, scored as they are. The driver
(the host) journals what they make and scores it like any other candidate."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Protocol

from merger.config.recipe import Candidate, SelectSettings
from merger.sweep.racing import Values


class Host(Protocol):
    """What a stage may ask of the driver."""

    select: SelectSettings

    def score(self, made: list[Candidate]) -> None:
        """Journal these children and score each on its parent's items."""

    def folder(self, cid: str) -> Path:
        """Where a candidate's model is (saved first, when a later candidate takes it as an input)."""

    def values(self, cid: str) -> Values:
        """A candidate's values by the deciding signal, on the items its rank counts."""


def get(kind: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{kind}")
