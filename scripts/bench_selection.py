"""Decision quality of selection strategies, replayed from per-item files: how often each picks a candidate within
delta of the whole-file best, at what share of the whole-file cost.

    .venv/bin/python scripts/bench_selection.py ITEMS... [--delta 1] [--repeats 1000] [--budgets 5,10,20,50]
                                                [--confidence 0.95] [--eta 2] [--min-items N] [--json FILE]

ITEMS: `merger eval --items` files, or folders of them; a candidate is a file's name without `.jsonl`, and files
of the same name in several folders are its scores on several tasks. Each file must cover a whole task file (the
items every candidate has are taken as the file). The whole-file score (the mean over tasks of each task's headline
metric) is the truth; the best by it is what a strategy should find.

For each of R seeded item orders (a fresh shuffle of every task, as `eval.seed` gives) and each budget (a share of
each task's items, as `eval.limit`), it replays:
- fixed / metric: every candidate on the budget's items, the best by the headline metric (merger before racing);
- fixed / prob: the same items, the best by the gold choice's probability (`select.signal: prob`);
- race / metric and race / prob: the sweep's own racing strategy (`select.race`, the grid), fed from the files,
  slices of min_items, eta times as many, ... up to the budget, stopping what is shown worse and ending once
  the leader is within delta of every other;
- halving / metric and halving / prob: the sweep's budgeted successive halving (`strategy: halving`,
  `select.budget` = the budget, no eval.limit), fed from the files, on the same schedule a sweep would run;
- halving / metric+strata (with `--parents A,B`): the same, each rung and the pick ranked by the parent
  post-stratified estimate (`sweep/strata.py`), the two parents' whole files read as cached (not counted).
Ties everywhere follow the sweep's rule (`selection.order`: the gold choice's probability, then a hash of the seed).
and prints, per strategy and budget: the item evaluations it made (share of every candidate on every item),
P(regret <= delta) where regret is the whole-file score of the best minus that of the pick, the mean regret (points),
decision accuracy (the share of candidate pairs it orders as the whole files do; over pairs with a candidate whose
name contains --group separately), how often the whole-file best was eliminated, how often every candidate within
delta of it was (`cut_all_within_delta`: none of them reached the last rung), and a random pick's P(regret <=
delta). `--json FILE` writes the same rows.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from itertools import combinations
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from merger.config.recipe import SelectSettings  # noqa: E402
from merger.config.results import ItemRecord  # noqa: E402
from merger.sweep import strategies  # noqa: E402
from merger.sweep.racing import Racing, score  # noqa: E402
from merger.sweep.selection import order  # noqa: E402
from merger.sweep.strata import Strata  # noqa: E402
from merger.sweep.strategies.base import Scores  # noqa: E402


def load(paths: list[Path]) -> tuple[dict, dict]:
    """(metric, signal): candidate -> task -> item id -> value, on the items every candidate has."""
    files = [f for p in paths for f in (sorted(p.glob("*.jsonl")) if p.is_dir() else [p])]
    metric: dict[str, dict[str, dict[str, float]]] = {}
    signal: dict[str, dict[str, dict[str, float | None]]] = {}
    for f in files:
        name = f.name.removesuffix(".jsonl")
        for line in f.read_text().splitlines():
            if not line.strip():
                continue
            r = ItemRecord.model_validate_json(line)
            if r.primary is None:
                sys.exit(f"error: {f}: items lack their headline metric (`primary`); rescore with this merger")
            metric.setdefault(name, {}).setdefault(r.task, {})[r.id] = r.metrics[r.primary]
            signal.setdefault(name, {}).setdefault(r.task, {})[r.id] = r.signal
    tasks = set.intersection(*(set(v) for v in metric.values()))
    if len(metric) < 2 or not tasks:
        sys.exit("error: ITEMS: need at least two candidates scored on a common task")
    shared = {t: sorted(set.intersection(*(set(metric[c][t]) for c in metric))) for t in tasks}
    metric = {c: {t: {i: v[t][i] for i in shared[t]} for t in tasks} for c, v in metric.items()}
    signal = {c: {t: {i: v[t][i] for i in shared[t]} for t in tasks} for c, v in signal.items()}
    for c in signal:  # a task without the signal is decided by its metric (as select.signal: auto does)
        for t in tasks:
            if any(x is None for x in signal[c][t].values()):
                signal[c][t] = dict(metric[c][t])
    return metric, signal


def ordered(values: dict, orders: dict[str, list[str]], n: int | None = None) -> dict:
    """Each task's items in the replay's seeded order (its first n only)."""
    return {t: {i: values[t][i] for i in orders[t][:n]} for t in orders}


def accuracy(ranking: list[str], truth: dict[str, float], group: str | None) -> tuple[float, float | None]:
    """Share of pairs ordered as the whole files order them (a whole-file tie counts either way), over all pairs
    and over the pairs with a candidate named like `group`."""
    place = {c: k for k, c in enumerate(ranking)}
    right, grouped = [], []
    for a, b in combinations(ranking, 2):
        ok = float(truth[a] == truth[b] or (place[a] < place[b]) == (truth[a] > truth[b]))
        right.append(ok)
        if group and (group in a or group in b):
            grouped.append(ok)
    return float(np.mean(right)), (float(np.mean(grouped)) if grouped else None)


def fixed(values: dict, prob: dict, orders: dict, limit: int, seed: int) -> tuple[list[str], int, dict[str, int]]:
    """Every candidate on the first `limit` items of each task: (ranking, item evaluations, items counted)."""
    scored = {c: ordered(v, orders, limit) for c, v in values.items()}
    ties = {c: ordered(v, orders, limit) for c, v in prob.items()}
    ranking = order(scored, "mean", ties, seed)
    return ranking, sum(len(x) for v in scored.values() for x in v.values()), dict.fromkeys(values, limit)


def replay(
    values: dict, prob: dict, orders: dict, limit: int | None, select: SelectSettings, sizes: dict, seed: int,
    estimate=None,
):  # fmt: skip
    """A sweep's strategy (racing, or budgeted halving), fed from the files: (ranking, item evaluations, items
    counted per candidate). `estimate`: what ranks candidates instead of their mean (parent post-stratification)."""
    reached = dict.fromkeys(values, 0)

    def reader(source):
        def seen(cid, below):
            n = min(reached[cid], below if below is not None else limit or max(sizes.values()))
            return ordered(source[cid], orders, n) if n else {}

        return seen

    seen = reader(values)
    racing = Racing(select.metric, select.confidence, select.delta, len(values), lambda: sizes)
    strategy = strategies.make(list(values), select, limit, Scores(seen, reader(prob), seed, estimate), racing)
    while not strategy.finished():
        for goal in strategy.ask(1):
            reached[goal.cid] = goal.offset + goal.limit
            strategy.tell(goal)
    counted = strategy.counted()
    scored = {c: seen(c, counted[c]) for c in values}
    ties = {c: reader(prob)(c, counted[c]) for c in values}
    items = sum(len(x) for v in scored.values() for x in v.values())
    return order(scored, select.metric, ties, seed, estimate), items, counted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("items", nargs="+", type=Path)
    parser.add_argument("--delta", type=float, default=1.0, help="the indifference zone, in points")
    parser.add_argument("--repeats", type=int, default=1000, help="seeded item orders replayed")
    parser.add_argument("--budgets", default="5,10,20,50", help="shares of each task's items, in percent")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--eta", type=int, default=2)
    parser.add_argument("--min-items", type=int, default=None, help="racing's first slice (default: budget / eta^2)")
    parser.add_argument("--group", default="dpo", help="pairs with a candidate named like this, reported apart")
    parser.add_argument(
        "--parents",
        default=None,
        help="A,B: two candidates whose whole files stratify the items (halving + strata: parent post-stratification, "
        "the parents' files cached, not counted)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    metric_values, signal_values = load(args.items)
    tasks = sorted(next(iter(metric_values.values())))
    ids = {t: list(next(iter(metric_values.values()))[t]) for t in tasks}
    sizes = {t: len(ids[t]) for t in tasks}
    truth = {c: score(v, "mean") for c, v in metric_values.items()}
    best = max(truth.values())
    regret = {c: 100 * (best - s) for c, s in truth.items()}
    within = {c for c, r in regret.items() if r <= args.delta + 1e-9}
    console = Console(width=160)
    head = Table(title=f"Whole files: {', '.join(f'{t} ({sizes[t]})' for t in tasks)}")
    for column in ("candidate", "score", "regret (points)", *tasks, "mean p_gold"):
        head.add_column(column, justify="left" if column == "candidate" else "right")
    for c in sorted(truth, key=lambda c: -truth[c]):
        head.add_row(
            c,
            f"{truth[c]:.4f}",
            f"{regret[c]:.2f}",
            *(f"{np.mean(list(metric_values[c][t].values())):.4f}" for t in tasks),
            f"{score(signal_values[c], 'mean'):.4f}",
        )
    console.print(head)
    random_pick = len(within) / len(truth)
    console.print(
        f"{len(truth)} candidates; within {args.delta:g} point(s) of the best: {len(within)}; "
        f"random pick: P(regret <= delta) {random_pick:.2f}, mean regret {np.mean(list(regret.values())):.2f}"
    )

    whole = len(truth) * sum(sizes.values())
    strata = None
    if args.parents:
        a, b = args.parents.split(",")
        if not {a, b} <= set(metric_values):
            sys.exit(f"error: --parents: {args.parents}: both must be candidates of ITEMS")
        strata = Strata.from_parents(metric_values[a], metric_values[b])
    rows = []
    for budget in [float(b) for b in args.budgets.split(",")]:
        limit = max(1, math.ceil(budget / 100 * min(sizes.values())))
        select = SelectSettings(  # racing: a grid raced in slices
            strategy="grid",
            race=True,
            delta=args.delta,
            confidence=args.confidence,
            eta=args.eta,
            min_items=min(limit, args.min_items or max(1, limit // args.eta**2)),
        )
        halving = SelectSettings(strategy="halving", budget=budget / 100, eta=args.eta)
        runs = {(s, signal): [] for s in ("fixed", "race", "halving") for signal in ("metric", "prob")}
        if strata is not None:
            runs[("halving", "metric+strata")] = []
        for r in range(args.repeats):
            rng = np.random.default_rng(r)
            orders = {t: [ids[t][k] for k in rng.permutation(sizes[t])] for t in tasks}
            for (strategy, signal), found in runs.items():
                values = metric_values if signal == "metric" else signal_values
                if signal == "metric+strata":
                    estimate = lambda v: strata.score(v, "mean")  # noqa: E731
                    found.append(replay(metric_values, signal_values, orders, None, halving, sizes, r, estimate))
                elif strategy == "fixed":
                    found.append(fixed(values, signal_values, orders, limit, r))
                elif strategy == "race":
                    found.append(replay(values, signal_values, orders, limit, select, sizes, r))
                else:
                    found.append(replay(values, signal_values, orders, None, halving, sizes, r))
        top = max(truth, key=truth.get)
        for (strategy, signal), found in runs.items():
            picks = [ranking[0] for ranking, _, _ in found]
            accuracies = [accuracy(ranking, truth, args.group) for ranking, _, _ in found]
            grouped = [g for _, g in accuracies if g is not None]
            rows.append(
                {
                    "strategy": strategy,
                    "signal": signal,
                    "budget": budget / 100,
                    "items_fraction": float(np.mean([items for _, items, _ in found])) / whole,
                    "p_within_delta": float(np.mean([p in within for p in picks])),
                    "mean_regret": float(np.mean([regret[p] for p in picks])),
                    "decision_accuracy": float(np.mean([a for a, _ in accuracies])),
                    "decision_accuracy_group": float(np.mean(grouped)) if grouped else None,
                    "best_eliminated": (
                        float(np.mean([counted[top] < max(counted.values()) for _, _, counted in found]))
                        if strategy != "fixed"
                        else None
                    ),
                    "cut_all_within_delta": (
                        float(
                            np.mean([all(counted[c] < max(counted.values()) for c in within) for *_, counted in found])
                        )
                        if strategy != "fixed"
                        else None
                    ),
                    "random_pick": random_pick,
                }
            )
    table = Table(title=f"Selection replayed on {args.repeats} seeded item orders (delta {args.delta:g} point)")
    for column in (
        "strategy",
        "signal",
        "budget",
        "items",
        "P(regret<=delta)",
        "mean regret",
        "decision acc.",
        f"acc. ({args.group} pairs)",
        "best eliminated",
        "all within delta cut",
        "random pick",
    ):
        table.add_column(column, justify="left" if column in ("strategy", "signal") else "right")
    for row in rows:
        table.add_row(
            row["strategy"],
            row["signal"],
            f"{row['budget']:.0%}",
            f"{row['items_fraction']:.1%}",
            f"{row['p_within_delta']:.2f}",
            f"{row['mean_regret']:.2f}",
            f"{row['decision_accuracy']:.2f}",
            "-" if row["decision_accuracy_group"] is None else f"{row['decision_accuracy_group']:.2f}",
            "-" if row["best_eliminated"] is None else f"{row['best_eliminated']:.2f}",
            "-" if row["cut_all_within_delta"] is None else f"{row['cut_all_within_delta']:.2f}",
            f"{row['random_pick']:.2f}",
        )
    console.print(table)
    if args.json:
        summary = {"candidates": truth, "sizes": sizes, "delta": args.delta, "repeats": args.repeats, "rows": rows}
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
