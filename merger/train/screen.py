"""The contamination check every trainer runs on its rows before training: 13-gram overlap with the eval tasks'
test items, reported always, and the matching rows dropped with `decontaminate`."""

from __future__ import annotations

from merger.config.results import Decontamination
from merger.config.train import TrainSettings
from merger.train import decontaminate


def screen(
    texts: list[str], settings: TrainSettings, references: dict[str, list[tuple[str, str]]]
) -> tuple[list[bool], Decontamination, list[dict]]:
    """(keep each row?, what was found, up to 20 examples)."""
    contamination, examples, flags = decontaminate.check(texts, references)
    if settings.decontaminate:
        contamination.dropped = contamination.matched
        return [not hit for hit in flags], contamination, examples
    return [True] * len(texts), contamination, examples
