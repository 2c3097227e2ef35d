"""The statistics that decide the winner: ties, clear gaps, and honest confidence intervals."""

import random

from merger.sweep.selection import ALPHA, confidence_interval, paired_p_value, rank, score


def bernoulli(p: float, n: int, seed: int, task: str = "t") -> dict[str, dict[str, float]]:
    rnd = random.Random(seed)
    return {task: {f"item{i}": float(rnd.random() < p) for i in range(n)}}


def test_identical_candidates_are_tied_with_p_near_one():
    a = bernoulli(0.6, 80, seed=1)
    assert paired_p_value(a, a, "mean") == 1.0
    [best, twin] = rank({"x": a, "y": dict(a)}, "mean")
    assert twin.tied_with_best and twin.p_vs_best > 0.95 and best.score == twin.score


def test_a_clear_gap_is_not_tied():
    strong, weak = bernoulli(0.9, 100, seed=2), bernoulli(0.3, 100, seed=3)
    p = paired_p_value(strong, weak, "mean")
    assert p < ALPHA
    ranked = rank({"weak": weak, "strong": strong}, "mean")
    assert [r.id for r in ranked] == ["strong", "weak"] and not ranked[1].tied_with_best


def test_a_small_gap_on_few_items_stays_tied():
    a = {"t": {f"i{i}": float(i < 6) for i in range(10)}}
    b = {"t": {f"i{i}": float(i < 5) for i in range(10)}}
    assert paired_p_value(a, b, "mean") >= ALPHA, "one item of ten is noise, not a winner"


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


def test_candidates_scored_on_more_items_rank_first():
    few = {"t": {"1": 1.0, "2": 1.0}}
    many = {"t": {str(i): 0.5 for i in range(8)}}
    assert [r.id for r in rank({"few": few, "many": many}, "mean")] == ["many", "few"]


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
            p_vs_best=0.3,
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
