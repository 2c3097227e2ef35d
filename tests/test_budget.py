"""Budgeted successive halving and the intervals a ranking prints, on synthetic values with known answers: the
schedule's cost and maximality, the gap's bounds weighting tasks as the score does, one-sided bounds, ties."""

import json
import math
import random

import numpy as np
import pytest

from merger.config.recipe import SelectSettings
from merger.sweep import strategies
from merger.sweep.racing import Racing, score
from merger.sweep.selection import order, paired_interval, tiebreak
from merger.sweep.sequential import confidence_sequence
from merger.sweep.strategies.base import Scores
from merger.sweep.strategies.halving import cost, schedule


@pytest.mark.parametrize("k", [2, 3, 5, 9, 11, 16])
@pytest.mark.parametrize("budget, smallest, cap", [(0.2, 1172, 1500), (0.2, 100, 100), (0.5, 40, 40), (0.1, 817, 40)])
def test_schedule_fits_the_budget_and_its_last_rung_is_the_largest_that_does(k, budget, smallest, cap):
    s = schedule(k, budget, smallest, cap)
    assert s.survivors[0] == k and s.survivors[-1] <= 2 and all(x > 2 for x in s.survivors[:-1])
    assert all(b == math.ceil(a / 2) for a, b in zip(s.survivors, s.survivors[1:]))
    last, steps = s.items[-1], len(s.items) - 1
    assert s.items == [last // 2 ** (steps - j) for j in range(steps + 1)] and s.items[0] >= 1
    assert s.cost <= s.allowed == int(budget * k * smallest)
    bigger = [(last + 1) // 2 ** (steps - j) for j in range(steps + 1)]
    assert last == cap or cost(s.survivors, bigger) > s.allowed, "L is the largest whole number that fits"


def test_schedule_of_the_study():
    """11 siblings on ARC-Challenge (1,172) and HellaSwag (1,500) at 20%: 11, 6, 3, 2 candidates on 83, 166, 333
    and 666 items per task (cost about 31/8 L), the last two on more than half the smallest file."""
    s = schedule(11, 0.2, 1172, 1500)
    assert s.survivors == [11, 6, 3, 2] and s.items == [83, 166, 333, 666] and s.allowed == 2578
    assert s.cost == 11 * 83 + 6 * 83 + 3 * 167 + 2 * 333 == 2578
    assert schedule(11, 0.001, 100, 100) is None, "not one item each at the first rung"
    assert schedule(2, 0.2, 1000, 1000).items == [200], "two candidates: a fixed subset of a fifth"


def test_the_gap_weights_tasks_as_the_score_does():
    """A 100-item task where a beats b by 10 points, a 2,000-item task where they agree: the score's gap is 5.0
    points. Averaging the tasks position by position (the old stream) bounded another quantity ([-0.5, +1.0])."""
    rng = np.random.default_rng(0)
    b_short = rng.random(100) < 0.5
    a_short = b_short.copy()
    flip = rng.choice(np.flatnonzero(~b_short), 10, replace=False)  # a right on 10 items b got wrong
    a_short[flip] = True
    long = rng.random(2000) < 0.6
    a = {
        "short": {f"s{i}": float(x) for i, x in enumerate(a_short)},
        "long": {f"l{i}": float(x) for i, x in enumerate(long)},
    }
    b = {
        "short": {f"s{i}": float(x) for i, x in enumerate(b_short)},
        "long": {f"l{i}": float(x) for i, x in enumerate(long)},
    }
    truth = score(a, "mean") - score(b, "mean")
    assert truth == pytest.approx(0.05)
    racing = Racing("mean", 0.95, 1.0, 2, lambda: {"short": 1000, "long": 5000})
    low, high = racing.gap(a, b)
    assert low <= truth <= high
    assert racing.gap(a, b, sides=1)[0] <= truth <= racing.gap(a, b, sides=1)[1]
    low, high = paired_interval(a, b, "mean")
    assert low <= truth <= high and low > 0, "fixed-n and paired: a is shown ahead"


def test_one_sided_bounds_are_narrower_and_keep_their_level():
    x = [1.0, 0.0, 0.0, 1.0, 0.0] * 40
    assert confidence_sequence(x, 0.05, sides=1)[1] < confidence_sequence(x, 0.05)[1]
    rng, misses, runs = np.random.default_rng(1), 0, 300
    for _ in range(runs):  # the upper bound alone, looked at after every item, misses the mean at most alpha
        drawn = (rng.random(120) < 0.3).astype(float) - (rng.random(120) < 0.3)
        misses += any(confidence_sequence(drawn[:n], 0.05, sides=1)[1] < 0 for n in range(10, 121, 10))
    assert misses / runs <= 0.05


def test_ties_go_to_the_gold_choice_probability_then_a_seeded_hash():
    values = {c: {"t": {"1": 1.0, "2": 0.0}} for c in ("a", "b", "c")}
    prob = {"a": {"t": {"1": 0.6, "2": 0.1}}, "b": {"t": {"1": 0.9, "2": 0.2}}, "c": {"t": {"1": 0.6, "2": 0.1}}}
    for seed in range(8):
        found = order(values, "mean", prob, seed)
        assert found[0] == "b", "equal metric: the higher mean p_gold first"
        assert found[1:] == sorted(["a", "c"], key=lambda c: tiebreak(c, seed)), "then the hash"
    firsts = {order(values, "mean", None, seed)[0] for seed in range(16)}
    assert len(firsts) == 3, "without p_gold no id is favoured: each comes first for some seed"


def test_budgeted_halving_follows_its_schedule():
    rng = random.Random(5)
    k, n = 11, 200
    scores = {f"c{i:02d}": [float(rng.random() < 0.3 + 0.03 * i) for _ in range(n)] for i in range(k)}
    reached = dict.fromkeys(scores, 0)

    def values(cid, below):
        m = min(reached[cid], below if below is not None else n)
        return {"task": {f"{i:03d}": scores[cid][i] for i in range(m)}} if m else {}

    select = SelectSettings(strategy="halving")
    plan = schedule(k, select.budget, n, n)
    strategy = strategies.make(
        list(scores), select, None, Scores(values), Racing("mean", 0.95, 1.0, k, lambda: {"task": n})
    )
    spent = 0
    while not strategy.finished():
        for goal in strategy.ask(1):
            spent += goal.limit
            reached[goal.cid] = goal.offset + goal.limit
            strategy.tell(goal)
    counted = strategy.counted()
    assert sorted(counted.values(), reverse=True)[:2] == [plan.items[-1]] * 2
    assert [sum(v >= m for v in counted.values()) for m in plan.items] == plan.survivors
    assert spent == plan.cost <= select.budget * k * n


@pytest.mark.slow
def test_a_sweeps_pick_is_what_a_replay_of_its_journal_picks(tiny_models, tmp_path):
    """Budgeted halving in a sweep, then the same strategy replayed offline from the items the journal recorded (as
    bench_selection replays files): the same survivors at every rung, the same pick, the same items counted."""
    from test_sweep import runner, slerp_recipe, write

    from merger.cli import app
    from merger.sweep.journal import Journal
    from merger.sweep.racing import racing_for

    recipe = slerp_recipe(
        tiny_models["a"], tiny_models["b"], 4, [0.1, 0.3, 0.5, 0.7, 0.9],
        eval={"tasks": ["merger_arithmetic"], "num_fewshot": 0, "limit": 160}, select={"strategy": "halving"},
    )  # fmt: skip
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["sweep", str(write(tmp_path / "r.yaml", recipe)), "--out", str(out), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output + result.stderr
    decision = json.loads((out / "sweep.json").read_text())["decision"]
    rows = {r["id"]: r for r in json.loads((out / "leaderboard.json").read_text())}
    journal = Journal(out)
    try:
        reached = dict.fromkeys(rows, 0)

        def read(signal):
            def values(cid, below):
                return journal.item_values(cid, "select", min(reached[cid], below or 10**9), signal)

            return values

        select = SelectSettings(strategy="halving")
        racing = racing_for(select, len(rows), journal.task_sizes)
        strategy = strategies.make(list(rows), select, 160, Scores(read("metric"), read("auto"), 1234), racing)
        while not strategy.finished():
            for goal in strategy.ask(1):
                reached[goal.cid] = goal.offset + goal.limit
                strategy.tell(goal)
        counted = strategy.counted()
        final = {cid: read("metric")(cid, counted[cid]) for cid in rows}
        ties = {cid: read("auto")(cid, counted[cid]) for cid in rows}
        assert order(final, "mean", ties, 1234)[0] == decision["winner"]
        assert {cid: sum(len(v) for v in final[cid].values()) for cid in rows} == {
            c: r["n_items"] for c, r in rows.items()
        }
    finally:
        journal.close()
