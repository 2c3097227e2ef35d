"""Does the preference data contain the benchmark items a model will be scored on?

Overlap is measured as lm-eval and the GPT-3 paper do: 13-grams of lower-cased, whitespace-split words.
A pair matches an eval task when any of its 13-grams appears in any of the task's test items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from merger.evaluate.tasks import TASKS, get_task

N = 13
SKIP_KEYS = {"id", "choice_labels", "answerKey", "subject", "split", "split_type", "source_id", "fields", "ind",
             "val_index", "label", "answer_orig"}


def ngrams(text: str, n: int = N) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


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


@dataclass
class Contamination:
    checked: int = 0
    matched: int = 0
    dropped: int = 0
    tasks: list[str] = field(default_factory=list)
    by_task: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        return {"checked": self.checked, "matched": self.matched, "dropped": self.dropped, "against": self.tasks,
                "by_task": self.by_task}


def available_tasks(root: Path | None) -> list[str]:
    """Every eval task whose test data is on this machine (the generated arithmetic task always is)."""
    found = ["arithmetic"]
    if root is not None:
        found += [name for name, task in TASKS.items()
                  if name != "arithmetic" and (root / task.folder / "test.jsonl").exists()]
    return found


def index_tasks(tasks: list[str], root: Path | None) -> dict[tuple[str, ...], tuple[str, str]]:
    """13-gram -> (task, item id) over every test item of every task."""
    index: dict[tuple[str, ...], tuple[str, str]] = {}
    for name in tasks:
        test, _ = get_task(name).load(root)
        for doc in test:
            for gram in ngrams(" ".join(_strings(doc))):
                index.setdefault(gram, (name, str(doc.get("id"))))
    return index


def check(texts: list[str], tasks: list[str], root: Path | None) -> tuple[Contamination, list[bool]]:
    """(report, per-text contaminated flag)."""
    index = index_tasks(tasks, root)
    report = Contamination(checked=len(texts), tasks=list(tasks))
    flags = []
    for row, text in enumerate(texts):
        hit = next((index[g] for g in ngrams(text) if g in index), None)
        flags.append(hit is not None)
        if hit:
            report.matched += 1
            report.by_task[hit[0]] = report.by_task.get(hit[0], 0) + 1
            if len(report.examples) < 20:
                report.examples.append({"pair": row, "task": hit[0], "item": hit[1]})
    return report, flags
