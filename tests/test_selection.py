"""The statistics that decide the winner: anytime-valid confidence sequences keep their confidence under repeated
looks, races stop clearly worse candidates early and eliminate the best no more often than the confidence allows,
ties stay ties, and bootstrap intervals cover."""

import math
import random

import numpy as np
import pytest

from merger.config.recipe import SelectSettings
from merger.sweep import strategies
from merger.sweep.racing import Racing, racing_for, score
from merger.sweep.selection import confidence_interval, rank
from merger.sweep.sequential import confidence_sequence
from merger.sweep.strategies.base import Scores


def bernoulli(p: float, n: int, seed: int, task: str = "t") -> dict[str, dict[str, float]]:
    rnd = random.Random(seed)
    return {task: {f"item{i}": float(rnd.random() < p) for i in range(n)}}


def test_confidence_sequence_keeps_its_confidence_under_repeated_looks():
    """500 races of two equal candidates (they disagree on 10% of a 400-item file, each side half the time), looked
    at after every 10 items: the sequence misses the file's true mean difference at any look in at most 5% of
    races. A fixed-n 95% interval re-checked at the same looks misses far more often: that is what it guards
    against."""
    rng = np.random.default_rng(7)
    misses = naive_misses = 0
    for _ in range(500):
        population = rng.choice([-1.0, 0.0, 1.0], size=400, p=[0.05, 0.9, 0.05])
        truth = population.mean()
        drawn = population[rng.permutation(400)]
        missed = naive = False
        for n in range(10, 401, 10):
            low, high = confidence_sequence(drawn[:n], 0.05, population=400)
            missed |= not low - 1e-12 <= truth <= high + 1e-12
            x = drawn[:n]
            half = 1.96 * x.std(ddof=1) / math.sqrt(n) if x.std() > 0 else 0.0
            naive |= not x.mean() - half <= truth <= x.mean() + half
        misses += missed
        naive_misses += naive
    assert misses / 500 <= 0.05, misses
    assert naive_misses / 500 > 0.1, naive_misses


def test_confidence_sequence_narrows_and_pins_the_mean_once_every_item_is_seen():
    x = list(np.random.default_rng(3).permutation([1.0] * 30 + [0.0] * 170))
    wide = confidence_sequence(x[:50], 0.05, 200, low=0.0)
    assert confidence_sequence(x, 0.05, 200, low=0.0) == (pytest.approx(0.15), pytest.approx(0.15))
    low, high = confidence_sequence(x[:150], 0.05, 200, low=0.0)
    infinite = confidence_sequence(x[:150], 0.05, None, low=0.0)
    assert low <= 0.15 <= high and infinite[0] <= 0.15 <= infinite[1]
    assert high - low < infinite[1] - infinite[0], "a finite file narrows the sequence (without replacement)"
    assert wide[1] - wide[0] > high - low


def race(truths: list[float], agree: float, n: int, seed: int, select: SelectSettings) -> tuple[dict, dict]:
    """Drive the grid strategy (racing) on synthetic siblings: each candidate's item is right with its own
    probability, from one shared uniform draw per item so candidates agree on most items (as merges of the same
    models do), `agree` of the time exactly."""
    rng = np.random.default_rng(seed)
    base = rng.random(n)
    own = rng.random((len(truths), n))
    shared = rng.random(n) < agree
    items = {f"c{k}": np.where(shared, base, own[k]) < p for k, p in enumerate(truths)}
    reached = dict.fromkeys(items, 0)

    def values(cid, below):
        m = min(reached[cid], below if below is not None else n)
        return {"t": {f"{i:04d}": float(items[cid][i]) for i in range(m)}} if m else {}

    strategy = strategies.make(list(items), select, n, Scores(values), racing_for(select, len(items)))
    while not strategy.finished():
        for goal in strategy.ask(1):
            reached[goal.cid] = goal.offset + goal.limit
            strategy.tell(goal)
    return strategy.counted(), {cid: float(v.mean()) for cid, v in items.items()}


def test_a_race_stops_a_clearly_worse_candidate_early_and_rarely_eliminates_the_best():
    select = SelectSettings(strategy="grid", race=True, min_items=25, eta=2)  # slices of 25, 50, 100, 200, 400 items
    truths = [0.62, 0.61, 0.58, 0.35]
    eliminated_best = stopped_worst_early = 0
    for seed in range(200):
        counted, means = race(truths, agree=0.85, n=400, seed=seed, select=select)
        best = max(means, key=means.get)
        eliminated_best += counted[best] < max(counted.values())
        stopped_worst_early += counted["c3"] <= 200
    assert stopped_worst_early == 200, "stopped by half of the 400 items"
    assert eliminated_best / 200 <= 0.05, eliminated_best


def test_a_race_among_equals_ends_settled_within_delta_before_the_budget():
    """Identical candidates: the race ends as soon as they are shown within delta, long before the budget, and
    stops none of them."""
    select = SelectSettings(strategy="grid", race=True, min_items=25, eta=2, delta=10.0)
    counted, _ = race([0.6, 0.6, 0.6], agree=1.0, n=800, seed=1, select=select)
    assert len(set(counted.values())) == 1 and next(iter(counted.values())) < 800


def test_identical_candidates_are_tied():
    a = bernoulli(0.6, 80, seed=1)
    [best, twin] = rank({"x": a, "y": dict(a)}, "mean")
    assert twin.tied_with_best and twin.gap[0] <= 0 <= twin.gap[1] and best.score == twin.score


def test_a_clear_gap_is_not_tied():
    strong, weak = bernoulli(0.95, 200, seed=2), bernoulli(0.2, 200, seed=3)
    ranked = rank({"weak": weak, "strong": strong}, "mean")
    assert [r.id for r in ranked] == ["strong", "weak"] and not ranked[1].tied_with_best and ranked[1].gap[1] < 0


def test_a_small_gap_on_few_items_stays_tied():
    a = {"t": {f"i{i}": float(i < 6) for i in range(10)}}
    b = {"t": {f"i{i}": float(i < 5) for i in range(10)}}
    assert rank({"a": a, "b": b}, "mean")[1].tied_with_best, "one item of ten is noise, not a winner"


def test_the_signal_orders_and_the_metric_is_reported():
    metric = {"a": {"t": {"1": 1.0, "2": 0.0}}, "b": {"t": {"1": 1.0, "2": 1.0}}}
    signal = {"a": {"t": {"1": 0.9, "2": 0.45}}, "b": {"t": {"1": 0.51, "2": 0.52}}}
    [first, second] = rank(metric, "mean", signal)
    assert first.id == "a" and first.score == 0.5 and first.signal == pytest.approx(0.675)
    assert second.score == 1.0


def test_interval_covers_the_true_mean_in_at_least_93_percent_of_trials():
    truth, trials = 0.6, 300
    covered = 0
    for seed in range(trials):
        low, high = confidence_interval(bernoulli(truth, 60, seed=1000 + seed), "mean", seed=seed)
        covered += low <= truth <= high
    assert covered / trials >= 0.93, covered / trials


def test_mean_metric_averages_tasks_and_a_task_metric_picks_one():
    values = {"a": {"1": 1.0, "2": 0.0}, "b": {"1": 1.0}}
    assert score(values, "mean") == 0.75 and score(values, "a") == 0.5
    low, high = confidence_interval(values, "b")
    assert low == high == 1.0


def test_the_race_compares_each_task_on_its_own_items():
    racing = Racing("mean", 0.95, 1.0, 2)
    a = {"x": {"1": 1.0, "2": 1.0}, "y": {"1": 0.0, "2": 1.0, "3": 1.0}}
    b = {"x": {"1": 0.0, "2": 1.0}, "y": {"1": 0.0, "2": 0.0, "4": 0.0}}
    from merger.sweep.racing import differences

    found = differences(a, b, "mean")
    assert {t: list(z) for t, z in found.items()} == {"x": [1.0, 0.0], "y": [0.0, 1.0]}, "items both have, per task"
    assert racing.gap(a, b)[0] <= score(a, "mean") - score(b, "mean") <= racing.gap(a, b)[1]


def test_candidates_scored_on_more_items_rank_first():
    few = {"t": {"1": 1.0, "2": 1.0}}
    many = {"t": {str(i): 0.5 for i in range(8)}}
    ranked = rank({"few": few, "many": many}, "mean")
    assert [r.id for r in ranked] == ["many", "few"]
    assert not ranked[1].tied_with_best, "cut at an earlier rung (fewer items), not tied, whatever its interval"

    from merger.config.results import LeaderboardRow
    from merger.sweep.leaderboard import _standing

    row = lambda r: LeaderboardRow(  # noqa: E731
        id=r.id, recipe="r.yaml", params={}, score=r.score, ci=r.ci, gap=r.gap, tied_with_best=r.tied_with_best,
        tasks=r.tasks, n_items=r.n_items,
    )  # fmt: skip
    best, cut = row(ranked[0]), row(ranked[1])
    assert _standing(cut, best) == "cut" and _standing(best, best) == "best"


def test_leaderboard_table_fits_80_columns():
    from rich.console import Console

    from merger.config.results import LeaderboardRow
    from merger.sweep.leaderboard import table

    rows = [
        LeaderboardRow(
            id=f"{i}a7b3c9d2e",
            recipe="merge_recipes/demo-smollm2-slerp.yaml",
            params={"merge.parameters.t": t},
            score=0.5 + i / 100,
            ci=(0.41, 0.62),
            tied_with_best=i > 2,
            gap=(-0.1, 0.02),
            tasks={"arc_challenge": 0.4, "merger_arithmetic": 0.6},
            n_items=40,
        )
        for i, t in enumerate([0.0, 0.25, 0.5, 0.75, 1.0])
    ]
    console = Console(width=80, record=True)
    console.print(table(rows, "mean"))
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80
    for r in rows:
        [line] = [line for line in lines if r.id in line]
        assert f"{r.score:.3f}" in line and "0.41-0.62" in line and "0.400" in line and "0.600" in line


def test_bench_selection_races_a_grid_beside_halving(tmp_path, monkeypatch):
    """The replay's rows are the strategies they are named for: among four identical candidates a race (a grid
    raced in slices) stops nobody and scores every one on the budget's items, as the fixed subset does, while
    halving spends the same items on rungs and cuts three of them."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent.parent / "scripts"))
    import bench_selection

    from merger.config.results import ItemRecord

    values = bernoulli(0.4, 400, seed=3)["t"]
    for name in ("a", "b", "c", "d"):
        records = [
            ItemRecord(task="t", id=i, doc_id=k, primary="acc", metrics={"acc": v}, signal=v).model_dump_json()
            for k, (i, v) in enumerate(values.items())
        ]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(records) + "\n")
    out = tmp_path / "replay.json"
    argv = ["bench_selection.py", str(tmp_path), "--repeats", "3", "--budgets", "20", "--json", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    bench_selection.main()
    rows = {(r["strategy"], r["signal"]): r for r in json.loads(out.read_text())["rows"]}
    race, fixed, halving = rows[("race", "metric")], rows[("fixed", "metric")], rows[("halving", "metric")]
    assert race["best_eliminated"] == 0 and race["items_fraction"] == pytest.approx(fixed["items_fraction"])
    assert halving["items_fraction"] == pytest.approx(0.2) and halving["best_eliminated"] > 0
