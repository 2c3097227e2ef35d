"""`soup` stages: a greedy soup (Wortsman et al., "Model soups", ICML 2022). The stage before's best `top`
candidates are its ingredients, in score order: the soup starts as the best; each next one is added to a uniform
linear average of the soup's ingredients, and kept only if that average is not shown worse than the soup so far,
paired on the same items at the sweep's confidence (`keeps`). Every soup tried is a journaled candidate whose parent
is the soup so far, so one not shown better is never `best/`."""

from __future__ import annotations

from merger.config.recipe import Candidate
from merger.config.refine import dtype_of, soup
from merger.sweep.racing import Values
from merger.sweep.selection import paired_interval
from merger.sweep.stages import Host


def keeps(new: Values, current: Values, metric: str, confidence: float) -> bool:
    """Whether a soup with one more ingredient stays: its paired difference to the soup so far, on the items both
    have, is not shown negative (the one-sided upper bound at `confidence` reaches 0)."""
    _, high = paired_interval(new, current, metric, level=2 * confidence - 1)
    return high >= 0


def run(host: Host, groups: list[list[Candidate]], n: int) -> None:
    for before in groups:
        ingredients = before[: before[0].refine[n - 1].top]
        kept, current = ingredients[:1], ingredients[0]
        for nxt in ingredients[1:]:
            tried = soup([*kept, nxt], n, current.id, host.folder, dtype_of(ingredients[0]))
            host.score([tried])
            if keeps(host.values(tried.id), host.values(current.id), host.select.metric, host.select.confidence):
                kept, current = [*kept, nxt], tried
