"""`local`: every unit in this process, one at a time, in the order submitted, on one workspace kept for the whole
sweep (`workspace.py`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from pathlib import Path

from merger.config.recipe import ExecuteSettings
from merger.sweep.executors.base import Finished
from merger.sweep.jobs import Unit, perform
from merger.sweep.workspace import RunOptions, Workspace


class LocalExecutor:
    slots = 1

    def __init__(self, device: str, lora_merge_cache: Path | None):
        self.workspace = Workspace(RunOptions(device, lora_merge_cache))  # kept across every unit of the sweep
        self.queue: deque[Unit] = deque()

    def submit(self, unit: Unit) -> None:
        self.queue.append(unit)

    def events(self) -> Iterator[Finished]:
        unit = self.queue.popleft()
        yield Finished(unit, perform(unit, self.workspace), "local")

    def close(self) -> None:
        self.queue.clear()
        self.workspace.close()


def make(settings: ExecuteSettings, out: Path, device: str, lora_merge_cache: Path | None) -> LocalExecutor:
    return LocalExecutor(device, lora_merge_cache)
