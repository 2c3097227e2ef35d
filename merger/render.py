"""How the CLI shows typed results: rich tables, one function per result type."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from merger.config.recipe import Candidate, input_models, output_layers
from merger.config.refine import stage_points
from merger.config.results import TrainRun
from merger.config.train import LABELS
from merger.publish.preflight import Check
from merger.sweep.plan import SweepPlan


def notes(console: Console, found: list) -> None:
    for note in found:
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)


def candidates_table(candidates: list[Candidate], extra: dict[str, list[str]] | None = None) -> Table:
    table = Table(title="Candidates")
    for column in ("recipe", "id", "method", "sweep point", "models", "layers", *(extra or {})):
        table.add_column(column)
    for i, c in enumerate(candidates):
        point = ", ".join(f"{k.split('.')[-1]}={json.dumps(v)}" for k, v in c.params.items()) or "-"
        table.add_row(
            Path(c.recipe_path).stem,
            c.id,
            c.merge.get("merge_method", "?"),
            point,
            str(len(input_models(c.merge))),
            str(output_layers(c.merge) or "as inputs"),
            *(values[i] for values in (extra or {}).values()),
        )
    return table


def show_configs(console: Console, candidates: list[Candidate]) -> None:
    for c in candidates:
        console.rule(f"{c.id}  ({Path(c.recipe_path).name})")
        console.print(yaml.safe_dump(c.merge, sort_keys=False).rstrip(), markup=False, highlight=False)


def plan(console: Console, p: SweepPlan) -> None:
    console.print(
        candidates_table(p.candidates, {"stages": p.stages, "disk if kept": [f"{b / 1e9:.2f} GB" for b in p.disk]})
    )
    console.print(
        f"eval: {', '.join(p.eval.tasks)} on {p.eval.limit or 'all'} items; select: {p.select.metric}, "
        f"{p.select.strategy}, keep {p.keep}; decided by {p.select.signal}"
        + (
            f", raced within {p.select.delta:g} point(s) at {p.select.confidence:.0%}"
            if p.select.race and p.eval.limit
            else ""
        )
    )
    if p.schedule is not None:
        console.print(schedule_table(p))
    items = f"{p.eval.limit} items per task" if p.eval.limit else "every item"
    for recipe in dict.fromkeys(c.recipe_path for c in p.candidates if c.refine):
        own = [k for k, c in enumerate(p.candidates) if c.recipe_path == recipe]
        size = max(p.disk[k] for k in own) / 1e9
        made, chain = len(own), ""
        for n, r in enumerate(p.candidates[own[0]].refine, 1):
            refined = min(r.top, made)
            if r.kind == "train":
                made = refined
                chain += f"; then stage {n}: the top {refined} trained ({' -> '.join(s.kind for s in r.train)}) into "
                chain += f"{made} children ({made * size:.2f} GB on disk while they train)"
            elif r.kind == "merge":
                points = len(stage_points(r))
                made = refined * points
                chain += f"; then stage {n}: the top {refined} merged again ({r.merge.get('merge_method')}, {points} "
                chain += f"point(s)) into up to {made} children, scored live, their inputs saved first"
            else:
                made = max(0, refined - 1)
                chain += (
                    f"; then stage {n}: a greedy soup of the top {refined}, up to {made} soups tried, scored live, "
                )
                chain += f"the ingredients saved first ({refined * size:.2f} GB)"
        console.print(
            f"{Path(recipe).name}: its candidates{chain}; each child scored on its parent's items ({items}) and "
            "tested against its parent",
            soft_wrap=True,
        )


def schedule_table(p: SweepPlan) -> Table:
    """Halving's rungs: who is scored on how many items, and what share of the budget each spends."""
    s, sizes = p.schedule, p.sizes
    items = min(min(sizes.values()), p.eval.limit or max(sizes.values()))
    whole = s.survivors[0] * items
    which = "eval.limit" if p.eval.limit and p.eval.limit < min(sizes.values()) else "the smallest task"
    table = Table(
        title=f"halving within {p.select.budget:.0%} of {s.survivors[0]} candidates x {items:,} items "
        f"({which}; {', '.join(f'{t} {n:,}' for t, n in sizes.items())})"
    )
    for column in ("rung", "candidates", "items per task", "new item evaluations per task", "share of the budget"):
        table.add_column(column, justify="right")
    for j, (survivors, items) in enumerate(zip(s.survivors, s.items)):
        new = survivors * (items - (s.items[j - 1] if j else 0))
        table.add_row(str(j + 1), str(survivors), f"{items:,}", f"{new:,}", f"{new / s.allowed:.0%}")
    table.add_row("all", "", "", f"{s.cost:,}", f"{s.cost / s.allowed:.0%} ({s.cost / whole:.1%} of every item)")
    return table


def train_table(run: TrainRun, out: Path) -> Table:
    table = Table(title=f"{LABELS[run.kind]} -> {out}")
    table.add_column("what")
    table.add_column("value", justify="right")
    data, contamination = run.data, run.decontamination
    table.add_row("rows read / used", f"{data.rows_read} / {data.rows_used}")
    for reason, count in data.dropped.items():
        table.add_row(f"dropped: {reason}", str(count))
    table.add_row("truncated", str(data.truncated))
    table.add_row("contaminated (13-gram) / dropped", f"{contamination.matched} / {contamination.dropped}")
    table.add_row("checked against", ", ".join(contamination.against))
    table.add_row(
        "parameters trained", f"{run.trainable:,}" + (f" (layers {_ranges(run.layers)})" if run.layers else "")
    )
    if run.teacher:
        table.add_row("distilled from", run.teacher)
    table.add_row("steps", str(run.steps))
    if run.first_loss is not None:
        table.add_row("loss, first -> last step", f"{run.first_loss:.4f} -> {run.last_loss:.4f}")
    if run.perplexity:
        p = run.perplexity
        table.add_row(f"held-out perplexity ({p.texts} texts)", f"{p.before:.3f} -> {p.after:.3f}")
    return table


def _ranges(layers: list[int]) -> str:
    """[22, 23, 24, 30] -> '22-24,30'."""
    parts, start = [], layers[0]
    for prev, cur in zip(layers, layers[1:] + [None]):
        if cur != prev + 1 if cur is not None else True:
            parts.append(f"{start}-{prev}" if prev != start else str(start))
            start = cur
    return ",".join(parts)


def checks_table(checks: list[Check], model_dir: Path) -> Table:
    table = Table(title=f"Preflight: {model_dir}")
    for column in ("check", "result", "detail"):
        table.add_column(column)
    colors = {"pass": "green", "fail": "red", "skip": "yellow"}
    for check in checks:
        table.add_row(check.name, f"[{colors[check.status]}]{check.status}[/]", check.detail)
    return table
