"""A continuous per-item selection signal, derived where lm-eval's logged samples are read (before anything is
stringified): for a multiple-choice item, the gold choice's probability over the choices, with the choices
normalized as the task's headline metric orders them (lm-eval's `process_results`: `acc` compares the
log-likelihoods, `acc_norm` the log-likelihood per character, `acc_bytes` per byte; per-unit scores are taken per
average choice length, which keeps their order and spreads the probabilities as much as plain log-likelihoods do).

The softmax of those normalized scores is largest on the choice the metric picks, so the item's metric is 1 exactly
when the gold choice has the largest probability (ties aside); unlike the 0/1 metric, it also moves when a model
grows surer or less sure of the right answer. Items of other kinds (generation, perplexity) have no signal.
"""

from __future__ import annotations

import math
from typing import Any

NORMALIZATION = {"acc": None, "acc_norm": "chars", "acc_bytes": "bytes"}  # the metrics whose pick a signal follows


def gold_indices(task, doc: dict[str, Any], choices: list[str]) -> list[int] | None:
    """The gold choices of a multiple-choice document (`choices`: its `doc_to_choice`), as lm-eval's
    `process_results` reads them; None when the label lies outside the choices (lm-eval then warns and scores 0)."""
    gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
    golds = gold if isinstance(gold, list) else [gold]
    found = []
    for g in golds:
        if isinstance(g, str):
            g = choices.index(g) if g in choices else -1
        if not isinstance(g, int) or not 0 <= g < len(choices):
            return None
        found.append(g)
    return found


def normalized(lls: list[float], choices: list[str], metric: str) -> list[float] | None:
    """The choices' scores as `metric` (`acc_norm,none` or `acc_norm`) compares them; None for other metrics."""
    name = metric.split(",")[0]
    if name not in NORMALIZATION or len(lls) != len(choices):
        return None
    how = NORMALIZATION[name]
    if how is None:
        return list(lls)
    sizes = [float(len(c)) if how == "chars" else float(len(c.encode("utf-8"))) for c in choices]
    if not all(sizes):
        return None
    scale = sum(sizes) / len(sizes)  # per average choice, not per character: the same order, probabilities as spread
    return [ll / size * scale for ll, size in zip(lls, sizes)]


def probabilities(scores: list[float]) -> list[float]:
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    total = sum(weights)
    return [w / total for w in weights]


def p_gold(lls: list[float], choices: list[str], gold: list[int], metric: str) -> float | None:
    """The gold choices' probability over the choices, normalized as `metric` orders them."""
    scores = normalized(lls, choices, metric)
    if scores is None or not gold:
        return None
    p = probabilities(scores)
    return min(1.0, sum(p[g] for g in gold))
