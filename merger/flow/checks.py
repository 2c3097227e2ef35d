"""Every stage's checks of the recipes, gathered before any work starts: `merger validate`, and the first thing
`merger merge` and `merger sweep` do.

The stages check their own sections (the merge stage asks mergekit about `merge:`, the eval stage knows its task
names and backends); this module runs them all over every candidate and reports a fault shared by every sweep point
once.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from merger.config.recipe import Candidate, Upstream, expand, input_models, output_layers, steps_of
from merger.config.refine import names_in, replace_names, stage_config, stage_points, stage_problems
from merger.core.errors import Problem, UserError
from merger.core.hf import inspect_model, model_path
from merger.evaluate import backends
from merger.evaluate.tasks import check_names
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
    try:
        lacking = backends.missing(candidate.eval.backend)
    except UserError as exc:
        lacking = exc.problems[0].cause
    if lacking:
        report.problems.append(Problem(candidate.recipe_path, "eval.backend", lacking))
    for where, names, include_path in tasks:
        try:
            check_names(names, include_path, candidate.recipe_path, where)
        except UserError as exc:
            report.problems.extend(exc.problems)
    return report


def check_stages(first: Candidate, made: int) -> Report:
    """A recipe's `refine:` stages that merge, before any work: their names (`config.refine.stage_problems`) and
    their mergekit configs, each earlier candidate standing in as the recipe's first merge will come out. `made`:
    the candidates of the recipe's first stage."""
    report = Report()
    for n, stage in enumerate(first.refine, 1):
        if stage.kind == "merge":
            named = stage_problems(first.recipe_path, n, stage, made, has_parent=n >= 2)
            report.problems += named
            for point in stage_points(stage) if not named else []:  # mergekit's checks, once the names are right
                config = stage_config(stage, point)
                names = {ref: f"merger-stage-input-{ref[1:]}" for _, ref in names_in(config)}
                stand_ins = [Upstream(name=ref, merge=first.merge, path=path) for ref, path in names.items()]
                checked = first.model_copy(update={"merge": replace_names(config, names), "upstream": stand_ins})
                found = check_merge(checked)
                for mine, theirs in ((report.problems, found.problems), (report.notes, found.notes)):
                    mine += [Problem(p.file, f"refine.{n - 1}.{p.field}", p.cause) for p in theirs]
        made = min(stage.top, made) * (len(stage_points(stage)) if stage.kind == "merge" else 1) - (
            stage.kind == "soup"
        )
    report.problems = list(dict.fromkeys(report.problems))
    report.notes = list(dict.fromkeys(report.notes))
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
        if found and found[0].search is None:
            staged = check_stages(found[0], len(found))
            report.problems += staged.problems
            report.notes += staged.notes
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
