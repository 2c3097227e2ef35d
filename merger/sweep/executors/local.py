"""`local`: every step in this process, one at a time, in the order submitted, on one workspace kept for the whole
sweep (`workspace.py`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from pathlib import Path

from merger.config.recipe import ExecuteSettings
from merger.flow.options import RunOptions
from merger.flow.steps import Step, perform
from merger.flow.workspace import Workspace
from merger.sweep.executors.base import Finished


class LocalExecutor:
    slots = 1

    def __init__(self, options: RunOptions):
        self.workspace = Workspace(options)  # kept across every step of the sweep
        self.queue: deque[Step] = deque()

    def prefers(self, step: Step) -> bool:
        return True

    def submit(self, step: Step) -> None:
        self.queue.append(step)

    def events(self) -> Iterator[Finished]:
        step = self.queue.popleft()
        yield Finished(step, perform(step, self.workspace), "local")

    def close(self) -> None:
        self.queue.clear()
        self.workspace.close()


def make(settings: ExecuteSettings, out: Path, options: RunOptions) -> LocalExecutor:
    return LocalExecutor(options)
