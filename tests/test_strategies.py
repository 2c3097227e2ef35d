"""Strategies on their own: asynchronous halving decides every rung as synchronous halving does, whatever the
number of workers and the order results arrive in, while idle workers promote early."""

import random

import pytest

from merger.config.recipe import SelectSettings
from merger.sweep import strategies
from merger.sweep.racing import racing_for
from merger.sweep.strategies.base import Scores


def simulate(scores: dict[str, list[float]], select: SelectSettings, limit: int, workers: int, seed: int):
    """Drive a strategy as the sweep does, with `workers` slots and results arriving in a random order."""
    reached: dict[str, int] = dict.fromkeys(scores, 0)  # items scored per candidate

    def values(cid, below):
        n = min(reached[cid], below if below is not None else limit)
        return {"task": {f"{i:03d}": scores[cid][i] for i in range(n)}} if n else {}

    racing = racing_for(select, len(scores), lambda: {"task": limit})
    strategy = strategies.make(list(scores), select, limit, Scores(values), racing)
    rng, pending, running, speculative = random.Random(seed), [], [], 0
    while True:
        pending += strategy.ask(workers - len(running) - len(pending))
        while pending and len(running) < workers:
            goal = pending.pop(0)
            speculative += goal.offset > reached[goal.cid]  # never: a goal starts where the last one ended
            running.append(goal)
        if not running:
            break
        goal = running.pop(rng.randrange(len(running)))
        reached[goal.cid] = goal.offset + goal.limit
        strategy.tell(goal)
    assert strategy.finished() and speculative == 0
    return strategy.counted(), reached


@pytest.mark.parametrize("seed", range(6))
def test_async_halving_decides_as_sync_halving(seed):
    rng = random.Random(100 + seed)
    scores = {f"c{i}": [float(rng.random() < 0.2 + 0.06 * i) for _ in range(32)] for i in range(9)}
    select = SelectSettings(strategy="halving", budget=0.4)  # 9 x 32 x 0.4 = 115 >= 3.5 L at L = 32
    sync, sync_reached = simulate(scores, select, 32, workers=1, seed=seed)
    assert sorted(sync.values()) == [4, 4, 4, 4, 8, 8, 16, 32, 32], "9 -> 5 -> 3 -> 2 on rungs of 4, 8, 16, 32"
    assert sync_reached == sync, "one worker never promotes early"
    for workers in (2, 3, 5):
        counted, reached = simulate(scores, select, 32, workers=workers, seed=seed)
        assert counted == sync
        assert all(reached[c] >= n for c, n in counted.items())


def test_idle_workers_promote_early():
    """With half of the first rung in, an idle worker scores the better half of it on the next rung at once."""
    scored = {"a": 1.0, "b": 0.0}
    values = lambda cid, below: {"t": {str(i): scored[cid] for i in range(8)}} if cid in scored else {}  # noqa: E731
    select = SelectSettings(strategy="halving", budget=0.75)  # 4 x 16 x 0.75 = 48 = 3 L at L = 16: rungs 8, 16
    strategy = strategies.make(list("abcd"), select, 16, Scores(values), racing_for(select, 4, lambda: {"t": 16}))
    first = strategy.ask(4)
    assert [(g.cid, g.offset, g.limit) for g in first] == [(c, 0, 8) for c in "abcd"]
    assert strategy.ask(1) == [], "busy workers: nothing early"
    for goal in first[:2]:
        strategy.tell(goal)
    assert [(g.cid, g.offset, g.limit) for g in strategy.ask(2)] == [("a", 8, 8)]
    assert strategy.ask(2) == [], "asked once"


def test_grid_asks_for_everything_once():
    select = SelectSettings(strategy="grid")
    strategy = strategies.make(["a", "b"], select, 10, Scores(lambda cid, below: {}), racing_for(select, 2))
    goals = strategy.ask(0)
    assert [(g.cid, g.offset, g.limit) for g in goals] == [("a", 0, 10), ("b", 0, 10)] and strategy.ask(5) == []
    for g in goals:
        assert not strategy.finished()
        strategy.tell(g)
    assert strategy.finished() and strategy.counted() == {"a": None, "b": None}
