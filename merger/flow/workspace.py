"""What a worker keeps between the units it is leased: built once by each executor (the local one, and every Ray
worker), so a sweep does each piece of work once per worker.

- the run options (`options.RunOptions`), in one object instead of loose arguments;
- the input models' tensors (`merge.resident.Resident`): read from disk once per worker per sweep;
- the candidates made live, by candidate id (or folder): every rung and slice of one scores the same model, merged
  once (the one in use on the device, the others in host memory, within a budget);
- lm-eval's tasks by eval key (`evaluator.Prepared`: names checked, data read, tasks built once), and merger's
  tokenization of their requests, shared by every sibling with the same tokenizer;
- the per-item cache (`evaluate.cache.ItemCache`), unless the run options turn it off.

Every object kept is keyed by what made it (candidate id, which covers its config and seed; folder; eval settings), so
nothing is served to the wrong unit. `counters` counts the work really done; each unit reports what it added.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

from merger.config.recipe import Candidate, EvalSettings
from merger.core.device import compute_dtype, release, resolve_device
from merger.evaluate.cache import ItemCache
from merger.evaluate.evaluator import Prepared
from merger.evaluate.model import load_model
from merger.flow.options import RunOptions
from merger.merge.resident import Resident, budget_from_env, free_host_bytes
from merger.merge.run import merge_in_memory


def live_budget_from_env() -> int | None:
    """`MERGER_LIVE_BYTES`, when set: the bytes of merged models a worker may keep for their next rungs (default: a
    quarter of the host memory free when the first is kept)."""
    value = os.environ.get("MERGER_LIVE_BYTES")
    return int(value) if value else None


@dataclass
class Counters:
    """Work done on a worker, counted as it happens."""

    merges: int = 0  # in-memory merges
    loads: int = 0  # models loaded from a folder
    task_builds: int = 0  # lm-eval task sets built
    input_bytes_read: int = 0  # input tensor bytes read from disk by in-memory merges
    scoring_s: float = 0.0  # seconds inside the forward passes and generation
    items_scored: int = 0  # items run through the model
    items_cached: int = 0  # items read from the per-item cache instead

    def since(self, before: Counters) -> dict:
        now, then = asdict(self), asdict(before)
        return {k: now[k] - then[k] for k in now}


class Workspace:
    def __init__(self, options: RunOptions):
        self.options = options
        self.resident = Resident(budget_from_env())
        self.counters = Counters()
        self.models: OrderedDict = OrderedDict()  # (candidate, folder) -> (model, tokenizer, digest), live one last
        self.budget = live_budget_from_env()  # bytes of models kept besides the input tensors
        self.prepared: dict[str, Prepared] = {}  # eval key -> tasks
        self.encoders: list = []  # merger's request tokenization, one per tokenizer seen
        self.items = ItemCache(options.cache) if options.cache else None  # records by model and task (`cache.py`)

    def snapshot(self) -> Counters:
        return Counters(**asdict(self.counters))

    def live(self, candidate: Candidate, folder: Path | None, digest: bool):
        """(model, tokenizer, digest): loaded from `folder` when the candidate is on disk (no digest), else merged in
        memory (with the digest of the merged tensors, when asked for). Either way in the device's compute dtype, so
        every candidate of a sweep is scored alike. Kept for the candidate's next rungs: the one in use on the
        device, the others (within `budget` bytes, the least recently used dropped first) in host memory."""
        key = (candidate.id, str(folder) if folder is not None else None)
        found = self.models.pop(key, None)
        if found is not None and digest and folder is None and found[2] is None:
            found = None  # kept without its digest: merged again, to hash the merged tensors
        if found is None:
            found = self._make(candidate, folder, digest)
        device = resolve_device(self.options.device)
        for other in self.models.values():  # the device is the live model's alone
            other[0].to("cpu")
        found[0].to(device)
        self.models[key] = found
        self._fit()
        return found

    def _make(self, candidate: Candidate, folder: Path | None, digest: bool):
        device = self.options.device
        if folder is not None:
            model, tokenizer = load_model(folder, device)
            self.counters.loads += 1
            return model, tokenizer, None
        before = self.resident.bytes_read
        model, tokenizer, fingerprint = merge_in_memory(
            candidate,
            device=device,
            lora_merge_cache=self.options.lora_merge_cache,
            digest=digest,
            resident=self.resident,
        )
        self.counters.merges += 1
        self.counters.input_bytes_read += self.resident.bytes_read - before
        return model.to(compute_dtype(resolve_device(device))), tokenizer, fingerprint

    def _fit(self) -> None:
        """Drop the least recently used models kept beyond the budget (never the live one, the last)."""
        if self.budget is None:
            self.budget = free_host_bytes() // 4
        sizes = {k: sum(p.numel() * p.element_size() for p in m[0].parameters()) for k, m in self.models.items()}
        for key in list(self.models)[:-1]:
            if sum(sizes.values()) <= self.budget:
                break
            del self.models[key]
            sizes.pop(key)
        release()

    def drop(self) -> None:
        """Forget every model kept (before a unit that needs the memory: a merge to disk, training)."""
        if self.models:
            self.models.clear()
            release()

    def tasks(self, settings: EvalSettings) -> Prepared:
        key = settings.model_dump_json()
        if key not in self.prepared:
            self.prepared[key] = Prepared(settings)
            self.counters.task_builds += 1
        return self.prepared[key]

    def close(self) -> None:
        self.drop()
        self.resident.clear()
        if self.items is not None:
            self.items.close()
