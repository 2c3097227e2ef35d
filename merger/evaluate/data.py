"""Task data: local JSONL in the schema of shared/evaldata, or the Hugging Face hub when online.

Local files are read strictly: a malformed line is reported with its file and line number, because a
silently skipped item would make two candidates' scores incomparable.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from merger.core.errors import UserError

Doc = dict[str, Any]


def data_dir(explicit: str | Path | None) -> Path | None:
    """--data-dir wins, then $MERGER_DATA_DIR; None means 'load from the hub'."""
    chosen = explicit or os.environ.get("MERGER_DATA_DIR")
    return Path(chosen) if chosen else None


def read_jsonl(path: Path, required: tuple[str, ...]) -> list[Doc]:
    if not path.is_file():
        raise UserError.one(str(path), "", "no such data file")
    docs = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError.one(str(path), f"line {number}", f"not valid JSON ({exc.msg})") from None
            if not isinstance(doc, dict):
                raise UserError.one(str(path), f"line {number}", "each line must be a JSON object")
            missing = [key for key in required if key not in doc]
            if missing:
                raise UserError.one(str(path), f"line {number}", f"missing field(s): {', '.join(missing)}")
            docs.append(doc)
    if not docs:
        raise UserError.one(str(path), "", "holds no items")
    return docs


def load_hub(
    dataset: str, name: str | None, split: str, convert: Callable[[Doc, int], Doc], revision: str | None = None
) -> list[Doc]:
    """The same dataset, revision and split lm-eval uses, converted to the local schema."""
    import datasets

    try:
        rows = datasets.load_dataset(dataset, name, split=split, revision=revision)
    except Exception as exc:  # datasets raises many types, all meaning 'not available here'
        raise UserError.one(
            dataset,
            split,
            f"could not load from the hub ({str(exc).splitlines()[0]}); use --data-dir with local JSONL files",
        ) from None
    return [convert(dict(row), i) for i, row in enumerate(rows)]


def sample_indices(n_items: int, limit: int | None, seed: int, offset: int = 0) -> list[int]:
    """A seeded subset in file order: the same items for every model, so candidates compare item by item.

    Items are taken from one seeded shuffle, so `offset` gives disjoint subsets (selection vs reporting) and
    growing `limit` gives nested ones (successive halving scores only the new items).
    """
    if limit is None:
        return list(range(n_items))
    order = random.Random(seed).sample(range(n_items), n_items)
    return sorted(order[offset : offset + limit])
