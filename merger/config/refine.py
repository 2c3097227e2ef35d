"""Who a `refine:` stage that merges makes, and how they are named.

In a stage's `merge:` (a mergekit config), three kinds of names stand for earlier candidates, wherever mergekit
names a model (`model`, `base_model`, a slice's sources):
- `@candidate`: the candidate being refined (one of the stage before's best `top`);
- `@parent`: its parent (the candidate it was trained or merged from);
- `@top1`, `@top2`, ...: the best, second best, ... of the stage before, ranked on the same items.

A merged child's id is built over its inputs' ids and its config (names replaced by the ids they stand for), so the
same chain gives the same ids on any machine and a changed stage makes only what depends on it again; its config
names its inputs' folders (where the sweep saves them first). A greedy soup's candidates are uniform linear
averages of their ingredients, named by them the same way.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from merger.config.recipe import REF_KEYS, Candidate, RefineStage, _set_path, model_refs, seed_from_id
from merger.core.errors import Problem

NAME = re.compile(r"^@(candidate|parent|top([1-9][0-9]*))$")


def names_in(merge: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (field path, name) of an earlier candidate in a stage's config (strings starting with @)."""
    return [(where, ref) for where, ref in model_refs(merge) if ref.startswith("@")]


def stage_points(stage: RefineStage) -> list[dict[str, Any]]:
    """The stage's sweep points (axis -> value), in grid order; one empty point when it has no axes."""
    import itertools

    axes = list(stage.sweep.items())
    return [dict(zip([a for a, _ in axes], values)) for values in itertools.product(*(v for _, v in axes))]


def stage_config(stage: RefineStage, point: dict[str, Any]) -> dict[str, Any]:
    """The stage's mergekit config at one of its sweep points."""
    data = {"merge": copy.deepcopy(stage.merge)}
    for axis, value in point.items():
        container, key = _set_path(data, axis)
        container[key] = copy.deepcopy(value)
    return data["merge"]


def replace_names(node: Any, names: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {
            k: names.get(v, v)
            if k in REF_KEYS and isinstance(v, str)
            else v
            if k == "parameters"
            else replace_names(v, names)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [replace_names(v, names) for v in node]
    return node


def stage_problems(path: str, n: int, stage: RefineStage, made_before: int, has_parent: bool) -> list[Problem]:
    """What a merge stage's names get wrong, one line each, before any work: a name that is not one, or that
    resolves to nothing (`@parent` of a candidate that has none, `@topK` beyond what the stage before makes), and a
    stage that merges a model with itself. `made_before`: how many candidates the stage before makes at most."""
    where = f"refine.{n - 1}"
    problems, seen = [], set()
    for point in stage_points(stage):
        config = stage_config(stage, point)
        found = names_in(config)
        for field, ref in found:
            if ref in seen:  # one line per name, at its first place
                continue
            seen.add(ref)
            match = NAME.match(ref)
            if match is None:
                cause = f"'{ref}' is not a name of an earlier candidate (@candidate, @parent, @top1, @top2, ...)"
            elif match.group(1) == "parent" and not has_parent:
                cause = f"'{ref}' resolves to nothing: stage {n} refines candidates that have no parent"
            elif match.group(2) and int(match.group(2)) > made_before:
                cause = f"'{ref}' resolves to nothing: the stage before makes {made_before} candidate(s)"
            else:
                continue
            problems.append(Problem(path, f"{where}.{field}", cause))
        merged = [ref for field, ref in found if not field.endswith("base_model")]
        twice = sorted({ref for ref in merged if merged.count(ref) > 1})
        ranks = {int(NAME.match(r).group(2)) for r in merged if NAME.match(r) and NAME.match(r).group(2)}
        if twice:
            problems.append(Problem(path, f"{where}.merge", f"merges {twice[0]} with itself"))
        elif "@candidate" in merged and any(k <= stage.top for k in ranks):
            k = min(k for k in ranks if k <= stage.top)
            problems.append(
                Problem(
                    path,
                    f"{where}.merge",
                    f"merges @candidate with @top{k}, which is that very candidate when it is the stage before's "
                    f"#{k} (top: {stage.top}); name another model",
                )
            )
    return list(dict.fromkeys(problems))


def _identity(kind: str, config: dict[str, Any], ids: dict[str, str], folders: dict[str, str]) -> tuple[str, dict]:
    """(the child's id, its config naming its inputs' folders): the id over the config with names -> input ids."""
    key = json.dumps([kind, replace_names(config, {name: f"@{cid}" for name, cid in ids.items()})], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:10], replace_names(config, folders)


def merged_child(
    refined: Candidate, n: int, point: dict[str, Any], before: list[Candidate], folder: Callable[[str], Path]
) -> Candidate | None:
    """Stage `n`'s child of `refined` at one of the stage's points; `before`: the stage before's candidates, best
    first. None where the names give one model twice, or name a `@topK` the stage before did not make."""
    stage = refined.refine[n - 1]
    config = stage_config(stage, point)
    ids: dict[str, str] = {}
    for _, ref in names_in(config):
        match = NAME.match(ref)
        if match.group(1) == "candidate":
            ids[ref] = refined.id
        elif match.group(1) == "parent":
            ids[ref] = refined.parent
        elif int(match.group(2)) <= len(before):
            ids[ref] = before[int(match.group(2)) - 1].id
        else:  # the stage before made fewer than validation allowed for (children that came out the same)
            return None
    merged = [ids[ref] for field, ref in names_in(config) if not field.endswith("base_model")]
    if len(set(merged)) < len(merged):
        return None
    cid, resolved = _identity("merge", config, ids, {name: str(folder(c)) for name, c in ids.items()})
    inputs = list(dict.fromkeys(ids.values()))
    own = {f"refine.{n - 1}.{axis}": value for axis, value in point.items()}
    return _child(refined, n, cid, resolved, inputs, best_of(inputs, before), own)


def soup(
    ingredients: list[Candidate], n: int, parent: str, folder: Callable[[str], Path], dtype: str = "float32"
) -> Candidate:
    """A soup of stage `n`: the uniform linear average of `ingredients` (mergekit's `linear`, every weight 1,
    normalized); `parent`: the soup so far, which it must beat to be kept."""
    ids = {f"@{c.id}": c.id for c in ingredients}
    config = {
        "merge_method": "linear",
        "models": [{"model": name, "parameters": {"weight": 1.0}} for name in ids],
        "parameters": {"normalize": True},
        "dtype": dtype,
    }
    cid, resolved = _identity("soup", config, ids, {name: str(folder(c)) for name, c in ids.items()})
    own = {f"refine.{n - 1}.soup": len(ingredients)}
    return _child(ingredients[0], n, cid, resolved, list(ids.values()), parent, own)


def best_of(inputs: list[str], before: list[Candidate]) -> str:
    """The best ranked of a merged child's inputs (the stage before's order; the others after, as listed): its
    parent, which it must beat to be kept."""
    rank = {c.id: k for k, c in enumerate(before)}
    return min(inputs, key=lambda cid: rank.get(cid, len(rank)))


def _child(like: Candidate, n: int, cid: str, merge: dict, inputs: list[str], parent: str, params: dict) -> Candidate:
    return like.model_copy(
        update={
            "id": cid,
            "merge": merge,
            "inputs": inputs,
            "parent": parent,
            "stage": n,
            "params": dict(params),
            "train": [],
            "upstream": [],
            "notes": [],
            "random_seed": seed_from_id(cid),
        }
    )


def dtype_of(candidate: Candidate) -> str:
    """The dtype a candidate's weights are written in (its merge's `dtype`, float32 when it gives none)."""
    return str(candidate.merge.get("dtype") or "float32")
