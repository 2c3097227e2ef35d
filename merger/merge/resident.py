"""Input models' tensors kept in memory between merges: each input is read from disk once per worker per sweep.

mergekit reads every input tensor through `LoaderCache().get(model)`, a per-thread cache of `LazyTensorLoader`s
that keeps each model's index but reads every tensor from its safetensors shard again on every merge. `Resident`
puts a loader in front of each one that keeps what it read (a tensor's bytes are read once) and hands mergekit a
copy, so no merge method can change what the next merge reads: the tensors are the ones `mergekit-yaml` reads, and
the merged tensors are bit-identical (the corpus test and the scored == saved digest check hold as they are).

What is kept is bounded by `budget` bytes (default: half the memory free when the first input is read); past it, the
inputs used longest ago are dropped and read again when next needed. Tensors are kept in host memory: on a 24 GB card
two 7B inputs (27 GB in bf16) cannot sit beside the model being scored, and the host's copy costs a transfer, not a
disk read.
"""

from __future__ import annotations

import os
from collections import OrderedDict


def free_host_bytes() -> int:
    """Memory available to this process now (Linux's MemAvailable), else a conservative 8 GiB."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


class _Kept:
    """A `LazyTensorLoader` stand-in: the same index, each tensor read from the wrapped loader once."""

    def __init__(self, loader, owner: Resident, key):
        self.loader, self.owner, self.key = loader, owner, key
        self.index = loader.index
        self.tensors: dict[str, object] = {}

    def get_tensor(self, key: str, device: str = "cpu", aliases=None, raise_on_missing: bool = True):
        if aliases and key not in self.index.tensor_paths:
            key = next((a for a in aliases if a in self.index.tensor_paths), key)
        tensor = self.tensors.get(key)
        if tensor is None:
            tensor = self.loader.get_tensor(key, device="cpu", raise_on_missing=raise_on_missing)
            if tensor is None:
                return None
            self.tensors[key] = tensor
            self.owner.read(self.key, tensor.numel() * tensor.element_size())
        self.owner.used(self.key)
        return tensor.to(device, copy=True)  # a copy: no merge method can change what the next merge reads

    def flush(self):
        self.loader.flush()

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


class Resident:
    """Every input model's tensors, read once and kept (up to `budget` bytes), for mergekit's loader cache."""

    def __init__(self, budget: int | None = None):
        self.budget = budget
        self.kept: OrderedDict = OrderedDict()  # model reference -> _Kept, least recently used first
        self.bytes_read = 0  # bytes read from disk, counted as each tensor is first read

    def install(self, loader_cache, models) -> None:
        """Put a keeping loader in front of each model's loader in mergekit's (per-thread) `LoaderCache`."""
        for model in models:
            current = loader_cache.get(model)  # mergekit's own: LoRA inputs are merged into its cache here
            if not isinstance(current, _Kept):
                kept = self.kept.get(model)
                if kept is None:
                    kept = self.kept[model] = _Kept(current, self, model)
                loader_cache.loaders[model] = kept

    def uninstall(self, loader_cache) -> None:
        """Give mergekit's cache its own loaders back (a merge to disk, or another sweep in this process, reads as
        mergekit does)."""
        for model, kept in self.kept.items():
            if loader_cache.loaders.get(model) is kept:
                loader_cache.loaders[model] = kept.loader

    def read(self, model, nbytes: int) -> None:
        self.bytes_read += nbytes
        if self.budget is None:
            self.budget = free_host_bytes() // 2
        total = sum(k.nbytes() for k in self.kept.values())
        for other in list(self.kept):
            if total <= self.budget:
                break
            if other != model:
                total -= self.kept[other].nbytes()
                self.kept[other].tensors.clear()  # read again from disk when next needed

    def used(self, model) -> None:
        self.kept.move_to_end(model)

    def clear(self) -> None:
        for kept in self.kept.values():
            kept.tensors.clear()


def budget_from_env() -> int | None:
    """`MERGER_RESIDENT_BYTES`, when set: the bytes of input tensors a worker may keep (0 keeps none)."""
    value = os.environ.get("MERGER_RESIDENT_BYTES")
    return int(value) if value else None
