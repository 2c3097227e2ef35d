"""Does the training data contain the benchmark items a model will be scored on?

Overlap is measured as lm-eval and the GPT-3 paper do: 13-grams of lower-cased, whitespace-split words.
A row matches an eval task when any of its 13-grams appears in any of the task's test items. The items' texts
are handed in (`references`: task -> [(item id, text)]), so this stage needs nothing from the eval stage.
"""

from __future__ import annotations

from merger.config.results import Decontamination

N = 13
MAX_EXAMPLES = 20


def ngrams(text: str, n: int = N) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def index(references: dict[str, list[tuple[str, str]]]) -> dict[tuple[str, ...], tuple[str, str]]:
    """13-gram -> (task, item id) over every test item of every task."""
    found: dict[tuple[str, ...], tuple[str, str]] = {}
    for task, items in references.items():
        for item, text in items:
            for gram in ngrams(text):
                found.setdefault(gram, (task, item))
    return found


def check(
    texts: list[str], references: dict[str, list[tuple[str, str]]]
) -> tuple[Decontamination, list[dict], list[bool]]:
    """(counts, up to 20 examples, per-text contaminated flag)."""
    grams = index(references)
    report = Decontamination(checked=len(texts), against=list(references))
    examples, flags = [], []
    for row, text in enumerate(texts):
        hit = next((grams[g] for g in ngrams(text) if g in grams), None)
        flags.append(hit is not None)
        if hit:
            report.matched += 1
            report.by_task[hit[0]] = report.by_task.get(hit[0], 0) + 1
            if len(examples) < MAX_EXAMPLES:
                examples.append({"row": row, "task": hit[0], "item": hit[1]})
    return report, examples, flags
