"""The one interface every executor offers the driver: submit units, and hear of each as it ends."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from merger.sweep.jobs import Outcome, Unit


@dataclass
class Finished:
    unit: Unit
    outcome: Outcome
    worker: str


@dataclass
class Lost:
    """The worker running `unit` died; the unit did not finish and can be leased again."""

    unit: Unit
    worker: str
    why: str


class Executor(Protocol):
    slots: int  # units that can run at once; the driver never has more than this submitted

    def submit(self, unit: Unit) -> None:
        """Start `unit` (or queue it to start at once when a worker frees up)."""

    def events(self) -> Iterator[Finished | Lost]:
        """Wait for the next submitted units to end; yields at least one. A unit's own error is raised here."""

    def close(self) -> None:
        """Release the workers."""
