"""How a sweep's work runs, wherever it runs: one object, built once and handed to every worker's workspace."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunOptions:
    device: str = "auto"  # cpu, cuda or auto
    lora_merge_cache: Path | None = None  # where mergekit keeps LoRA inputs merged into their base
    trust_remote_code: bool = False  # let transformers run a model's own code
    allow_pickle: bool = False  # read pickled (.bin) input weights
    strict: bool = False  # notes are problems
    random_seed: int | None = None  # over the recipes' own seeds
    cache: Path | None = None  # the per-item cache's folder (`evaluate/cache.py`), the same on every worker; None: off
