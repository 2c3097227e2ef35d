"""A sweep's plan, before any work: the recipes checked (`flow.checks`), one yardstick for every candidate, and what
`merger sweep --dry-run` shows (each candidate's steps, as the planner would lease them, and the disk they need).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from merger.config.recipe import Candidate, EvalSettings, ExecuteSettings, SelectSettings
from merger.core.device import resolve_device
from merger.core.errors import UserError
from merger.evaluate.evaluator import Prepared
from merger.flow.checks import require_valid, weights_bytes
from merger.flow.plan import Goal, outline
from merger.sweep import executors
from merger.sweep.strategies.halving import Schedule, schedule_for


def sweep_settings(candidates: list[Candidate]) -> tuple[EvalSettings, SelectSettings, ExecuteSettings]:
    """One sweep, one yardstick: every recipe must score on the same items and select the same way (and run its
    work in the same place)."""
    first = candidates[0]
    for c in candidates[1:]:
        for name in ("eval", "select", "execute"):
            if getattr(c, name) != getattr(first, name):
                raise UserError.one(
                    c.recipe_path,
                    name,
                    f"differs from {first.recipe_path}'s; candidates of one sweep must be scored and selected alike",
                )
    if first.select.metric not in ("mean", *first.eval.tasks):
        raise UserError.one(
            first.recipe_path,
            "select.metric",
            f"'{first.select.metric}' is neither 'mean' nor one of the eval tasks ({', '.join(first.eval.tasks)})",
        )
    if first.select.report_items and first.eval.limit is None:
        raise UserError.one(first.recipe_path, "eval.limit", "report_items needs a limit (the items left over)")
    return first.eval, first.select, first.execute


def check_search(recipes: list[Path], candidates: list[Candidate]) -> None:
    """A search is one recipe, raced on `eval.limit` items and reported on `report_items` others."""
    first = candidates[0]
    if not any(c.search for c in candidates):
        return
    if len(recipes) > 1:
        raise UserError.one(first.recipe_path, "search", "a search takes one recipe; run the others as their own sweep")
    if first.eval.limit is None:
        raise UserError.one(first.recipe_path, "eval.limit", "a search needs a limit: the items it races trials on")
    if not first.select.report_items:
        raise UserError.one(
            first.recipe_path,
            "select.report_items",
            "a search needs report items: the winner's published score must come from items no trial was chosen on",
        )
    if "strategy" in first.select.model_fields_set and first.select.strategy != "grid":  # halving is the default
        raise UserError.one(first.recipe_path, "select.strategy", "a search races its own trials; leave it out")


@dataclass
class SweepPlan:
    """What `merger sweep --dry-run` shows: the candidates, their stages and disk needs, and the yardstick."""

    candidates: list[Candidate]
    eval: EvalSettings
    select: SelectSettings
    execute: ExecuteSettings
    keep: int
    stages: list[str] = field(default_factory=list)
    disk: list[int] = field(default_factory=list)
    schedule: Schedule | None = None  # halving's rungs (a dry run reads the task sizes to show them)
    sizes: dict[str, int] = field(default_factory=dict)


def plan_sweep(
    recipes: list[Path],
    keep: int | None = None,
    device: str = "auto",
    strict: bool = False,
    random_seed: int | None = None,
    execute: dict | None = None,
    dry_run: bool = False,
) -> SweepPlan:
    """Check every recipe and the sweep's settings, and say what a sweep would do; nothing is run. `execute`: the
    `merger sweep` flags given, over the recipes' `execute:` section; `dry_run`: also read the tasks' sizes, for
    halving's schedule."""
    if not recipes:
        raise UserError.one("merger sweep", "RECIPE", "give at least one recipe file")
    resolve_device(device)
    candidates = require_valid([str(r) for r in recipes], strict=strict, random_seed=random_seed)
    evals, select, recipes_execute = sweep_settings(candidates)
    check_search(recipes, candidates)
    run_on = ExecuteSettings.model_validate({**recipes_execute.model_dump(), **(execute or {})})
    executors.check(run_on, candidates[0].recipe_path)
    steps = outline(candidates, Path("."), lambda c: Goal(c.id, limit=evals.limit))
    found = SweepPlan(
        candidates,
        evals,
        select,
        run_on,
        keep or select.keep,
        [" -> ".join(step.label for step in steps[c.id]) for c in candidates],
        [weights_bytes(c) for c in candidates],
    )
    if dry_run and select.strategy == "halving" and len(candidates) > 1 and not any(c.search for c in candidates):
        found.sizes = Prepared(evals).sizes()
        try:
            found.schedule = schedule_for(len(candidates), select, found.sizes, evals.limit)
        except ValueError as exc:
            raise UserError.one(candidates[0].recipe_path, "select.budget", str(exc)) from None
    return found
