"""The sweep's results as a person compares them: a rich table, leaderboard.md/.json and report.png.
Everything is derived from the journal, so `merger report DIR` redraws it at any time."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from merger.config.results import Decision, LeaderboardRow, Reported, SearchSummary, SweepCandidate, SweepMeta, points
from merger.core.atomic import atomic_write
from merger.core.errors import UserError
from merger.sweep.journal import Journal
from merger.sweep.standing import Standing


def standing(journal: Journal, meta: SweepMeta) -> Standing:
    return Standing(journal, meta.select, meta.candidates, meta.counted, meta.eval.seed)


def entries(journal: Journal, meta: SweepMeta) -> list[LeaderboardRow]:
    steps = {c.id: [next(iter(step)) for step in c.config.get("train") or []] for c in journal.candidates()}
    ranks = standing(journal, meta)
    gaps = ranks.versus()
    rows = []
    for r in ranks.ranked():
        info = meta.candidates[r.id]
        report = journal.item_values(r.id, "report")
        reported = (
            Reported(
                tasks={t: sum(v.values()) / len(v) for t, v in report.items()},
                n_items=sum(len(v) for v in report.values()),
            )
            if report  # only the winner has report items
            else None
        )
        rows.append(
            LeaderboardRow(
                id=r.id,
                recipe=info.recipe,
                params=info.params,
                train=steps.get(r.id, []),
                stage=info.stage,
                parent=info.parent,
                inputs=info.inputs,
                vs_parent=gaps.get(r.id),
                beats_parent=gaps[r.id][0] > 0 if r.id in gaps else None,
                reference=info.reference,
                score=r.score,
                ci=r.ci,
                signal=r.signal,
                gap=r.gap,
                tied_with_best=r.tied_with_best,
                tasks=r.tasks,
                n_items=r.n_items,
                reported=reported,
            )
        )
    return rows


def decide(journal: Journal, meta: SweepMeta) -> Decision | None:
    """The decision line: the pick, the rule that made it, the items spent, and the paired interval to the
    runner-up; with racing, the race's last look over the candidates scored on the most items."""
    ranks = standing(journal, meta)
    ranked = ranks.eligible()
    if not ranked:
        return None
    decided = ranks.values(meta.select.signal)
    values = {r.id: decided[r.id] for r in ranked}
    race = ranks.racing()
    sizes = {cid: sum(len(v) for v in vs.values()) for cid, vs in values.items()}
    finalists = [r.id for r in ranked if sizes[r.id] == max(sizes.values())]
    verdict = race.look({cid: values[cid] for cid in finalists})
    tasks = len(next(iter(values.values())))
    fell_back = {t for t in journal.fallbacks if any(t in v for v in values.values())}
    signal = "metric" if meta.select.signal == "metric" or len(fell_back) == tasks else "prob"
    files = journal.task_sizes()
    per_task = [min(meta.eval.limit or n, n) for n in files.values()] or [meta.eval.limit or 0] * tasks
    rule = "search" if meta.search else meta.select.strategy + (" + race" if meta.select.race else "")
    runner = ranked[1] if len(ranked) > 1 else None
    return Decision(
        winner=ranked[0].id,
        rule=rule,
        signal=signal,
        fallback=sorted(fell_back) if signal == "prob" else [],
        settled=verdict.settled or len(finalists) - len(verdict.worse) == 1,
        delta=meta.select.delta,
        confidence=meta.select.confidence,
        finalists=finalists,
        within=[cid for cid in finalists if cid not in verdict.worse],
        items_scored=journal.items_scored("select", list(meta.candidates)),
        budget=sum(per_task) * (meta.search.trials if meta.search else len(meta.candidates)) or None,
        runner_up=runner.id if runner else None,
        paired=[-100 * runner.gap[1], -100 * runner.gap[0]] if runner else None,
        paired_items=min(sizes[ranked[0].id], runner.n_items) if runner else None,
    )


def _short(path: str, among: list[str]) -> str:
    """An axis by the fewest last names that tell it from the others (`merge.parameters.t` -> t,
    `merge.parameters.t.0.value.1` -> t.0.value.1 beside t.1.value.1), never starting at a list index."""
    parts = path.split(".")
    for k in range(1, len(parts) + 1):
        tail = ".".join(parts[-k:])
        if not parts[-k].lstrip("-").isdigit() and sum(o == tail or o.endswith("." + tail) for o in among) == 1:
            return tail
    return path


def _value(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _point(row: LeaderboardRow) -> str:
    """A candidate in a few characters: its sweep point by the axes' last names, else its recipe's name."""
    if row.reference:
        return f"input {Path(row.reference).name}"
    if row.inputs:  # a merged child: its stage's own point (`refine.N.<axis>`)
        own = {k.split(".", 2)[2]: v for k, v in row.params.items() if k.startswith("refine.")}
        made = [f"soup of {own.pop('soup')}"] if "soup" in own else ["merge"]
        made += [f"{_short(k, list(own))}={_value(v)}" for k, v in own.items()]
        return " ".join(made) + "".join(f" +{kind}" for kind in row.train)
    names = list(row.params)
    point = ", ".join(f"{_short(k, names)}={_value(v)}" for k, v in row.params.items()) or Path(row.recipe).stem
    return point + "".join(f" +{kind}" for kind in row.train)


def _standing(row: LeaderboardRow, best: LeaderboardRow, tied: str = "yes") -> str:
    """best; not better than its parent (never kept); cut at an earlier rung (halving, or stopped by a race: scored
    on fewer items than the best); tied with the best; or nothing."""
    if row is best:
        return "best"
    if row.reference:
        return "input"
    if row.beats_parent is False:
        return "≤ parent"
    if row.n_items < best.n_items and row.stage == best.stage:
        return "cut"
    return tied if row.tied_with_best else ""


def _best(rows: list[LeaderboardRow]) -> LeaderboardRow:
    """The winner: the best row that is neither an input model nor a child shown no better than its parent."""
    return next((r for r in rows if r.beats_parent is not False and not r.reference), rows[0])


def title(metric: str, search: SearchSummary | None) -> str:
    if search is None:
        return f"Leaderboard ({metric})"
    return (
        f"Leaderboard ({metric}): search of {search.trials} trials ({search.sampler}, {search.candidates} distinct), "
        f"{search.pruned} stopped early, {search.items_saved} of {search.items_scored + search.items_saved} items saved"
    )


def table(rows: list[LeaderboardRow], metric: str, search: SearchSummary | None = None) -> Table:
    """The leaderboard for a terminal; it fits 80 columns with two or three tasks."""
    t = Table(title=title(metric, search), box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1), collapse_padding=True)
    t.add_column("#", justify="right", no_wrap=True)
    t.add_column("id", no_wrap=True)
    t.add_column("candidate", overflow="ellipsis", max_width=20)  # the one column that gives way
    t.add_column("score", justify="right", no_wrap=True)
    t.add_column("95% CI", no_wrap=True)
    t.add_column("tied", no_wrap=True)
    t.add_column("n", justify="right", no_wrap=True)
    tasks = sorted({task for r in rows for task in r.tasks})
    for task in tasks:
        t.add_column(task if len(tasks) == 1 else task[:9], justify="right", no_wrap=True)
    best = _best(rows) if rows else None
    for i, r in enumerate(rows, 1):
        t.add_row(
            str(i),
            r.id,
            _point(r),
            f"{r.score:.3f}",
            f"{r.ci[0]:.2f}-{r.ci[1]:.2f}",
            _standing(r, best),
            str(r.n_items),
            *(f"{r.tasks[k]:.3f}" if k in r.tasks else "-" for k in tasks),
        )
    return t


def markdown(
    rows: list[LeaderboardRow], metric: str, search: SearchSummary | None = None, decision: Decision | None = None
) -> str:
    tasks = sorted({task for r in rows for task in r.tasks})
    lines = [
        f"# {title(metric, search)}",
        "",
        "| # | id | recipe | sweep point | score | 95% CI | signal | gap to best (points) | tied with best | items | "
        + " | ".join(tasks)
        + " |",
        "|" + "---|" * (10 + len(tasks)),
    ]
    best = _best(rows) if rows else None
    for i, r in enumerate(rows, 1):
        point = ", ".join(f"`{k}`={v}" for k, v in r.params.items()) or "-"
        if r.reference:
            point = f"input model `{r.reference}`, as it is"
        if r.parent:
            bounds = points(100 * r.vs_parent[0], 100 * r.vs_parent[1]) if r.vs_parent else "-"
            made = f"merge of {', '.join(r.inputs)}; " if r.inputs else ""
            point += f" (stage {r.stage}: {made}child of {r.parent}, vs parent {bounds})"
        gap = points(100 * r.gap[0], 100 * r.gap[1]) if r.gap and i > 1 else "-"
        signal = f"{r.signal:.4f}" if r.signal is not None else "-"
        lines.append(
            f"| {i} | {r.id} | {Path(r.recipe).name}{''.join(' +' + k for k in r.train)} | {point} | {r.score:.4f} | "
            f"[{r.ci[0]:.4f}, {r.ci[1]:.4f}] | {signal} | {gap} | {_standing(r, best, 'yes') or 'no'} | "
            f"{r.n_items} | " + " | ".join(f"{r.tasks.get(k, float('nan')):.4f}" for k in tasks) + " |"
        )
    if decision is not None:
        lines += ["", decision.line() + "."]
        lines += [
            "",
            f"Ranked by the deciding signal ({decision.signal}); score and 95% CI: the headline metric; gap to best: "
            f"the signal's difference to the best, a paired bootstrap interval at {decision.confidence:.0%} on the "
            "items both were scored on (a fixed-n interval, read once); tied with best: that interval reaches 0."
            + (
                " A race's stops use anytime-valid confidence sequences instead, valid however often it looked."
                if "race" in decision.rule
                else ""
            )
            + (
                " A refined child's difference to its parent is an anytime-valid confidence sequence (its lower bound "
                "read alone); a child not shown better than its parent (≤ parent) is never kept, and its parent "
                "stays eligible."
                if any(r.parent for r in rows)
                else ""
            )
            + (
                " Cut: stopped at an earlier rung (scored on fewer items), never tied with the best."
                if any(_standing(r, best) == "cut" for r in rows)
                else ""
            )
            + (
                " Input rows are the merges' own input models scored as they are, on the same items; never kept."
                if any(r.reference for r in rows)
                else ""
            ),
        ]
    reported = next((r for r in rows if r.reported), None)
    if reported:
        rep = reported.reported
        lines += [
            "",
            f"Reported score of {reported.id} on {rep.n_items} items it was not selected on: "
            + ", ".join(f"{t} {v:.4f}" for t, v in rep.tasks.items()),
        ]
    return "\n".join(lines) + "\n"


def plot(rows: list[LeaderboardRow], metric: str, path: Path, search: SearchSummary | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_names = sorted({k for r in rows for k in r.params})
    panels = 1 + len(axes_names) + (search is not None)
    columns = min(panels, 4)
    fig, grid = plt.subplots(
        -(-panels // columns), columns, figsize=(4.5 * columns, 4 * -(-panels // columns)), squeeze=False
    )
    axes = [list(grid.flat)]
    for ax in axes[0][panels:]:
        ax.set_visible(False)
    if search is not None:
        _progress(axes[0][panels - 1], search, metric)
    ax = axes[0][0]
    ys = [r.score for r in rows]
    err = [[r.score - r.ci[0] for r in rows], [r.ci[1] - r.score for r in rows]]
    colors = ["tab:green" if i == 0 else ("tab:blue" if r.tied_with_best else "tab:gray") for i, r in enumerate(rows)]
    ax.bar(range(len(rows)), ys, yerr=err, color=colors, capsize=3)
    ax.set_xticks(range(len(rows)), [r.id[:6] for r in rows], rotation=45, ha="right")
    ax.set_ylabel(f"score ({metric}), 95% CI")
    ax.set_title("candidates (green: best, blue: tied)")
    for ax, name in zip(axes[0][1:], axes_names):
        points = [(r.params[name], r.score, r) for r in rows if name in r.params]
        numeric = all(isinstance(x, (int, float)) for x, _, _ in points)
        labels = sorted({json.dumps(x) for x, _, _ in points})
        xs = [x if numeric else labels.index(json.dumps(x)) for x, _, _ in points]
        ax.errorbar(
            xs,
            [y for _, y, _ in points],
            yerr=[[y - r.ci[0] for _, y, r in points], [r.ci[1] - y for _, y, r in points]],
            fmt="o",
            capsize=3,
        )
        if not numeric:
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_xlabel(_short(name, axes_names) if len(name) > 30 else name)
        ax.set_ylabel("score")
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, image.getvalue())


def _progress(ax, search: SearchSummary, metric: str) -> None:
    """The search over trials: each trial's score (hollow: stopped early), and the best complete one so far."""
    numbers = range(len(search.values))
    done = [(i, v) for i, v, c in zip(numbers, search.values, search.complete) if c]
    early = [(i, v) for i, v, c in zip(numbers, search.values, search.complete) if not c]
    if done:
        ax.plot(*zip(*done), "o", color="tab:blue", label="scored on every item")
    if early:
        ax.plot(*zip(*early), "o", mfc="none", color="tab:gray", label="stopped early (score so far)")
    best, line = float("-inf"), []
    for v, c in zip(search.values, search.complete):
        best = max(best, v) if c else best
        line.append(best if best > float("-inf") else float("nan"))
    ax.step(list(numbers), line, where="post", color="tab:green", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"score ({metric})")
    ax.set_title(f"search ({search.sampler})")
    ax.legend(fontsize=7)


def meta_of(journal: Journal, out: Path) -> SweepMeta:
    """`sweep.json`, or, for a sweep that never finished (killed, or still running), its settings and candidates as
    the journal has them: each candidate counted on every item it was scored on so far."""
    if (out / "sweep.json").exists():
        return SweepMeta.model_validate_json((out / "sweep.json").read_text())
    settings = journal.meta("settings")
    if settings is None:
        raise UserError.one(str(out), "DIR", "no sweep here to report on")
    candidates = {
        row.id: SweepCandidate(
            recipe=row.recipe,
            params=row.params,
            parent=row.parent,
            stage=row.stage,
            reference=row.reference,
            inputs=row.config.get("inputs", []),
        )
        for row in journal.candidates()
        if journal.item_values(row.id, "select")
    }
    return SweepMeta.model_validate({**settings, "candidates": candidates})


def write_reports(journal: Journal, out: Path, meta: SweepMeta | None = None) -> list[LeaderboardRow]:
    """leaderboard.json/.md and report.png, and the table and decision line on the terminal; `meta`: the sweep's
    (default: read from `sweep.json`, or from the journal when the sweep did not finish)."""
    meta = meta or meta_of(journal, out)
    rows = entries(journal, meta)
    decision = meta.decision or decide(journal, meta)
    atomic_write(
        out / "leaderboard.json",
        json.dumps([r.model_dump(mode="json", exclude_none=True) for r in rows], indent=2) + "\n",
    )
    atomic_write(out / "leaderboard.md", markdown(rows, meta.metric, meta.search, decision))
    plot(rows, meta.metric, out / "report.png", meta.search)
    console = Console()
    console.print(table(rows, meta.metric, meta.search))
    if decision is not None:
        console.print(decision.line(), markup=False, highlight=False)
    for task in sorted(journal.fallbacks) if meta.select.signal != "metric" else []:
        console.print(f"note: {task}: its items have no gold-choice probability; decided by its metric", markup=False)
    return rows


def report(out: Path) -> list[LeaderboardRow]:
    """`merger report`: redraw a sweep's leaderboard and plots from its journal (so far, when it did not finish)."""
    out = Path(out)
    if not Journal.exists(out):
        raise UserError.one(str(out), "DIR", "no sweep here to report on")
    journal = Journal(out)
    try:
        return write_reports(journal, out)
    finally:
        journal.close()
