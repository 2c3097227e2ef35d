"""`local`: every unit in this process, one at a time, in the order submitted (merger's behaviour before executors)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from pathlib import Path

from merger.config.recipe import ExecuteSettings
from merger.sweep.executors.base import Finished
from merger.sweep.jobs import Unit, perform


class LocalExecutor:
    slots = 1

    def __init__(self, device: str, lora_merge_cache: Path | None):
        self.device, self.lora_merge_cache = device, lora_merge_cache
        self.queue: deque[Unit] = deque()

    def submit(self, unit: Unit) -> None:
        self.queue.append(unit)

    def events(self) -> Iterator[Finished]:
        unit = self.queue.popleft()
        yield Finished(unit, perform(unit, self.device, self.lora_merge_cache), "local")

    def close(self) -> None:
        self.queue.clear()


def make(settings: ExecuteSettings, out: Path, device: str, lora_merge_cache: Path | None) -> LocalExecutor:
    return LocalExecutor(device, lora_merge_cache)
