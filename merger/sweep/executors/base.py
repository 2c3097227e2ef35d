"""The one interface every executor offers the driver: submit steps, and hear of each as it ends."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from merger.flow.steps import Outcome, Step


@dataclass
class Finished:
    step: Step
    outcome: Outcome
    worker: str


@dataclass
class Lost:
    """The worker running `step` died; the step did not finish and can be leased again."""

    step: Step
    worker: str
    why: str


class Executor(Protocol):
    slots: int  # steps that can run at once; the driver never has more than this submitted

    def prefers(self, step: Step) -> bool:
        """Whether `step` would run now where its candidate already is (an executor with one worker: always)."""

    def submit(self, step: Step) -> None:
        """Start `step` (or queue it to start at once when a worker frees up)."""

    def events(self) -> Iterator[Finished | Lost]:
        """Wait for the next submitted steps to end; yields at least one. A step's own error is raised here."""

    def close(self) -> None:
        """Release the workers."""
