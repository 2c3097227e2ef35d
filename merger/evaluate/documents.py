"""The eval tasks' test items as plain text: what preference data is checked against for contamination."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from merger.evaluate.data import data_dir
from merger.evaluate.evaluator import parse_tasks
from merger.evaluate.tasks import TASKS, get_task

# Fields that are labels or ids, not text a model could have been trained on.
SKIP_KEYS = {
    "id",
    "choice_labels",
    "answerKey",
    "subject",
    "split",
    "split_type",
    "source_id",
    "fields",
    "ind",
    "val_index",
    "label",
    "answer_orig",
}


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in SKIP_KEYS:
                yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def available_tasks(root: Path | None) -> list[str]:
    """Every eval task whose test data is on this machine (the generated arithmetic task always is)."""
    found = ["arithmetic"]
    if root is not None:
        found += [
            name
            for name, task in TASKS.items()
            if name != "arithmetic" and (root / task.folder / "test.jsonl").exists()
        ]
    return found


def reference_texts(tasks: list[str] | None, data: str | Path | None) -> dict[str, list[tuple[str, str]]]:
    """task -> [(item id, the item's words)] for the named tasks, or for every task available here."""
    root = data_dir(data)
    names = parse_tasks(tasks, "--against") if tasks else available_tasks(root)
    texts = {}
    for name in names:
        test, _ = get_task(name).load(root)
        texts[name] = [(str(doc.get("id")), " ".join(_strings(doc))) for doc in test]
    return texts
