"""The per-item cache: a model scored once on an item is never scored on it again, in a sweep, across sweeps and by
`merger eval` (`$MERGER_HOME/items/items.sqlite`, or `$MERGER_ITEM_CACHE`; `--no-cache` bypasses it).

A record is kept under two keys, each built from what made it, so an entry is never served to anything else:
- the model as scored (`model_key`): the digest of its weights (`core.digest.tensor_digest`, the digest a sweep
  already checks between the weights scored and those saved), its tokenizer (vocabulary, special tokens, chat
  template), its config (every field but file metadata), and how it ran (backend, device type, dtype);
- the task as built (`task_key`): the name asked for, every leaf task's lm-eval config as lm-eval dumps it (prompts,
  metrics, filters, shots, generation arguments, its functions' source), the few-shot seed, the chat and system
  settings, and the lm-eval version. The item-order seed is not part of it: it only orders the items, and each
  record's position is set again by the run that reads it.

Only tasks whose every metric lm-eval aggregates by its mean are cached: their score over any set of items is the
mean of the items' values, so a run mixing cached and new items gives what one run over all of them gives. SQLite
in WAL mode, each write one transaction: safe under two processes, and a process killed while writing leaves the
cache as it was before that write. A folder's weight digest is kept too, by its files' names, sizes and times, so
a folder is hashed once.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from merger.config.results import ItemRecord
from merger.core.hf import cache_root

SCORER = 1  # bump when merger's scorer changes what it records for the same model and items
CONFIG_METADATA = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "_commit_hash", "use_cache"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    model TEXT NOT NULL, task TEXT NOT NULL, doc TEXT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (model, task, doc));
CREATE TABLE IF NOT EXISTS digests (folder TEXT NOT NULL, files TEXT NOT NULL, digest TEXT NOT NULL,
    PRIMARY KEY (folder, files));
"""


def _hash(*parts: Any) -> str:
    def plain(o: Any) -> str:  # a function left in a config: by its name, never by its address
        return f"{getattr(o, '__module__', '')}.{getattr(o, '__qualname__', type(o).__name__)}"

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=plain).encode()).hexdigest()[:32]


def tokenizer_fingerprint(tokenizer) -> str:
    """What a tokenizer does to text: its whole definition (a fast tokenizer's JSON, else its vocabulary), special
    tokens and chat template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else sorted(tokenizer.get_vocab().items())
    special = {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())}
    extra = [getattr(tokenizer, k, None) for k in ("add_bos_token", "add_eos_token", "padding_side")]
    return _hash(body, special, tokenizer.chat_template, extra)


def config_fingerprint(config) -> str:
    return _hash({k: v for k, v in config.to_dict().items() if k not in CONFIG_METADATA})


def model_key(weights: str, tokenizer, config, runtime: str) -> str:
    """The model as scored: weights digest, tokenizer, config, and `runtime` (backend, device type, dtype)."""
    return _hash(weights, tokenizer_fingerprint(tokenizer), config_fingerprint(config), runtime)


def task_key(name: str, tasks: dict[str, Any], settings) -> str:
    """The task as built: its name, each leaf's lm-eval config, and the settings that shape prompts."""
    configs = {leaf: task.dump_config() for leaf, task in sorted(tasks.items())}
    shaping = [settings.fewshot_seed, settings.apply_chat_template, settings.fewshot_as_multiturn]
    return _hash(name, configs, shaping, settings.system_instruction, version("lm_eval"), SCORER)


def cacheable(task) -> bool:
    """Whether each metric's aggregation over items is their mean (so cached and new items combine exactly)."""
    from lm_eval.api.metrics import mean

    return all(fn is mean for fn in task.aggregation().values())


@dataclass
class Scored:
    """A model's identity for the cache, with what a run read from cache needs to say about it."""

    key: str
    chat_template: bool  # whether its tokenizer has a chat template (`apply_chat_template` uses it)


def default_root() -> Path:
    """`$MERGER_ITEM_CACHE`, else `$MERGER_HOME/items`."""
    return Path(os.environ.get("MERGER_ITEM_CACHE") or cache_root() / "items")


class ItemCache:
    def __init__(self, root: Path | None = None):
        root = Path(root) if root is not None else default_root()
        root.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(root / "items.sqlite", timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=60000")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def get(self, model: str, task: str, docs: Iterable[str]) -> dict[str, ItemRecord]:
        wanted = list(docs)
        found: dict[str, ItemRecord] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT doc, record FROM items WHERE model=? AND task=? AND doc IN ({marks})"
            found.update(
                (doc, ItemRecord.model_validate_json(record))
                for doc, record in self.db.execute(query, (model, task, *chunk))
            )
        return found

    def put(self, model: str, task: str, records: dict[str, ItemRecord]) -> None:
        rows = [(model, task, doc, r.model_dump_json(exclude_none=True)) for doc, r in records.items()]
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?)", rows)

    def folder_digest(self, folder: Path) -> str:
        """`core.digest.folder_digest`, computed once per version of the folder's weight files."""
        from merger.core.digest import folder_digest

        folder = Path(folder).resolve()
        files = sorted(folder.glob("*.safetensors"))
        stamp = json.dumps([(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files])
        row = self.db.execute("SELECT digest FROM digests WHERE folder=? AND files=?", (str(folder), stamp)).fetchone()
        if row:
            return row[0]
        digest = folder_digest(folder)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("DELETE FROM digests WHERE folder=?", (str(folder),))
            self.db.execute("INSERT INTO digests VALUES (?, ?, ?)", (str(folder), stamp, digest))
        return digest

    def folder_model(self, folder: Path, runtime: str) -> Scored:
        """A model folder's identity, without loading its weights."""
        from transformers import AutoConfig, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
        config = AutoConfig.from_pretrained(folder)
        key = model_key(self.folder_digest(folder), tokenizer, config, runtime)
        return Scored(key, tokenizer.chat_template is not None)


def live_model(weights: str, model, tokenizer, runtime: str) -> Scored:
    """A live model's identity: `weights` is the digest of the tensors it was made from (as saved, they digest the
    same)."""
    return Scored(model_key(weights, tokenizer, model.config, runtime), tokenizer.chat_template is not None)


def runtime(backend: str, device: str) -> str:
    """How a backend runs a model on a device: merger's scorer in the device's compute dtype; lm-eval's own
    backends in the dtype the folder asks for."""
    from merger.core.device import compute_dtype, resolve_device

    device = resolve_device(device)
    dtype = str(compute_dtype(device)) if backend == "merger" else "auto"
    return f"{backend}:{device}:{dtype}"
