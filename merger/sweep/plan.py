"""From recipe files to checked candidates: every stage's checks, gathered before any work starts.

The stages check their own sections (the merge stage asks mergekit about `merge:`, the eval stage knows its task
names); this module runs them all over every candidate and reports a fault shared by every sweep point once.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from merger.config.recipe import (
    Candidate,
    EvalSettings,
    ExecuteSettings,
    SelectSettings,
    expand,
    input_models,
    output_layers,
    steps_of,
)
from merger.core.atomic import ensure_target_free
from merger.core.device import resolve_device
from merger.core.errors import Problem, UserError
from merger.core.hf import inspect_model, model_path, parse_size
from merger.evaluate.tasks import check_names
from merger.merge.run import merge_to_disk
from merger.merge.validate import Report, check_merge


def check_candidate(candidate: Candidate, allow_pickle: bool = False, trust_remote_code: bool = False) -> Report:
    """Every stage's checks of one candidate: its named upstream merges' first, then its own merge's."""
    report = Report()
    for index, named in enumerate(candidate.upstream):
        found = check_merge(
            candidate.model_copy(update={"merge": named.merge, "upstream": candidate.upstream[:index]}),
            allow_pickle,
            trust_remote_code,
        )
        for mine, theirs in ((report.problems, found.problems), (report.notes, found.notes)):
            mine += [Problem(p.file, f"upstream.{named.name}{p.field.removeprefix('merge')}", p.cause) for p in theirs]
    own = check_merge(candidate, allow_pickle, trust_remote_code)
    report.problems += own.problems
    report.notes += own.notes
    tasks = [("eval.tasks", candidate.eval.tasks, candidate.eval.include_path)]
    for where, step in steps_of(candidate.train, candidate.refine):
        for name in ("data", "heldout"):  # local files are checked now; a hub dataset id when it is read
            value = getattr(step.settings, name)
            if value and Path(value).suffix in (".jsonl", ".json") and not Path(value).is_file():
                report.problems.append(
                    Problem(candidate.recipe_path, candidate.field(f"{where}.{name}"), "no such file")
                )
        if step.settings.against:
            tasks.append((f"{where}.against", step.settings.against, step.settings.include_path))
    for where, names, include_path in tasks:
        try:
            check_names(names, include_path, candidate.recipe_path, where)
        except UserError as exc:
            report.problems.extend(exc.problems)
    return report


def validate_recipes(
    paths: list[str],
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    strict: bool = False,
    random_seed: int | None = None,
) -> tuple[list[Candidate], Report]:
    """Expand and check every recipe; gather all problems rather than stopping at the first. Each candidate carries
    its notes; `strict` (or a recipe's `strict: true`) makes them problems."""
    candidates: list[Candidate] = []
    report = Report()
    for path in paths:
        try:
            found = expand(path, random_seed)
        except UserError as exc:
            report.problems.extend(exc.problems)
            continue
        results = [(c, check_candidate(c, allow_pickle, trust_remote_code)) for c in found]
        for c, result in results:
            c.notes = [str(n) for n in result.notes]
            if strict or c.strict:
                result.problems.extend(Problem(n.file, n.field, f"{n.cause} (strict)") for n in result.notes)
                result.notes = []
        report.problems.extend(_label(results, "problems"))
        report.notes.extend(_label(results, "notes"))
        candidates.extend(found)
    return candidates, report


def _label(results: list[tuple[Candidate, Report]], kind: str) -> list[Problem]:
    """Report a fault shared by every sweep point once; name the point only where it is that point's own."""
    counts: dict[tuple[str, str], int] = {}
    for _, report in results:
        for p in getattr(report, kind):
            counts[(p.field, p.cause)] = counts.get((p.field, p.cause), 0) + 1
    labelled, done = [], set()
    for candidate, report in results:
        for p in getattr(report, kind):
            key = (p.field, p.cause)
            if counts[key] == len(results):
                if key not in done:
                    labelled.append(p)
                    done.add(key)
            else:
                labelled.append(Problem(p.file, candidate.field(p.field), p.cause))
    return labelled


def require_valid(
    paths: list[str],
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    strict: bool = False,
    random_seed: int | None = None,
) -> list[Candidate]:
    candidates, report = validate_recipes(paths, allow_pickle, trust_remote_code, strict, random_seed)
    if report.problems:
        raise UserError(report.problems)
    return candidates


def merge_one(
    recipe: Path,
    out: Path,
    *,
    candidate: str | None = None,
    device: str = "cpu",
    shard_size: str = "5GB",
    force: bool = False,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    strict: bool = False,
    random_seed: int | None = None,
    lora_merge_cache: Path | None = None,
) -> Candidate:
    """`merger merge`: check the recipe, pick its one candidate, merge it to `out` atomically."""
    parse_size(shard_size)  # cheap argument checks first, so a typo costs nothing
    resolve_device(device)
    ensure_target_free(out, force)
    candidates = require_valid([str(recipe)], allow_pickle, trust_remote_code, strict, random_seed)
    ids = ", ".join(c.id for c in candidates)
    if candidate is not None:
        chosen = [c for c in candidates if c.id == candidate]
        if not chosen:
            raise UserError.one(str(recipe), "--candidate", f"no candidate '{candidate}'; this recipe has: {ids}")
    elif len(candidates) > 1:
        raise UserError.one(str(recipe), "sweep", f"{len(candidates)} candidates; pick one with --candidate ({ids})")
    else:
        chosen = candidates
    merge_to_disk(
        chosen[0],
        out,
        device=device,
        shard_size=shard_size,
        force=force,
        trust_remote_code=trust_remote_code,
        lora_merge_cache=lora_merge_cache,
    )
    return chosen[0]


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
    if first.select.strategy == "halving" and first.eval.limit is None:
        raise UserError.one(first.recipe_path, "eval.limit", "halving needs a limit to halve")
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
    if first.select.strategy != "grid":
        raise UserError.one(first.recipe_path, "select.strategy", "a search races its own trials; leave it out")


def weights_bytes(candidate: Candidate) -> int:
    """A merge writes about as much as its largest input, scaled by the layers it stacks."""
    largest, layers_in = 0, 1
    for ref in input_models(candidate.merge):
        path = Path(model_path(ref))
        if path.is_dir():
            size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
            if size > largest:
                largest, layers_in = size, inspect_model(ref).num_layers
    layers_out = output_layers(candidate.merge)
    return int(largest * max(1.0, layers_out / layers_in if layers_out else 1.0))


def check_disk(candidate: Candidate, folder: Path) -> None:
    needed = weights_bytes(candidate)
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if needed * 1.1 > free:
        raise UserError.one(
            str(folder),
            "disk",
            f"candidate {candidate.id} needs about {needed / 1e9:.1f} GB, only {free / 1e9:.1f} GB free",
        )


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


def plan_sweep(
    recipes: list[Path],
    keep: int | None = None,
    device: str = "auto",
    strict: bool = False,
    random_seed: int | None = None,
    execute: dict | None = None,
) -> SweepPlan:
    """Check every recipe and the sweep's settings, and say what a sweep would do; nothing is run. `execute`: the
    `merger sweep` flags given, over the recipes' `execute:` section."""
    if not recipes:
        raise UserError.one("merger sweep", "RECIPE", "give at least one recipe file")
    resolve_device(device)
    candidates = require_valid([str(r) for r in recipes], strict=strict, random_seed=random_seed)
    evals, select, recipes_execute = sweep_settings(candidates)
    check_search(recipes, candidates)
    return SweepPlan(
        candidates,
        evals,
        select,
        ExecuteSettings.model_validate({**recipes_execute.model_dump(), **(execute or {})}),
        keep or select.keep,
        [
            " -> ".join(
                [*(u.name for u in c.upstream), "merge" if c.train else "merge (in memory)", *(s.kind for s in c.train)]
                + ["eval"]
            )
            for c in candidates
        ],
        [weights_bytes(c) for c in candidates],
    )
