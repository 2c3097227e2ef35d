"""Checks a candidate's mergekit config before any work starts, asking mergekit what it accepts.

mergekit itself accepts some broken configs (a reversed passthrough layer range gives a model with a
negative layer count) and fails others only after creating the output folder; each check here turns
such a config into one line naming the file, the field and the cause.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from merger.config.recipe import Candidate
from merger.core.errors import Problem
from merger.core.hf import ModelInfo, inspect_model, model_path

SHAPE_KEYS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads")


@dataclass
class Report:
    """Problems stop the run; notes are worth knowing but change nothing."""

    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)


def _entries(node: dict[str, Any], prefix: str = "merge") -> Iterator[tuple[str, str, Any]]:
    """Every (field path, key, value) of a nested config, mappings inside lists included."""
    for key, value in node.items():
        here = f"{prefix}.{key}"
        yield here, key, value
        if isinstance(value, dict):
            yield from _entries(value, here)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    yield from _entries(item, f"{here}.{i}")


def model_refs(merge: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Every (field path, model reference) in a mergekit config, parameters excluded."""
    for path, key, value in _entries(merge):
        if ".parameters" in path or not isinstance(value, str):
            continue
        if key in ("model", "base_model") or (key == "tokenizer_source" and value not in ("union", "base")):
            yield path, value


def _parameter_keys(merge: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Every (field path, parameter name) in the config, at any level."""
    for path, key, value in _entries(merge):
        if key == "parameters" and isinstance(value, dict) and path.count(".parameters") == 1:
            for name in value:
                yield f"{path}.{name}", name


def _input_groups(merge: dict[str, Any]) -> Iterator[tuple[str, list[str], str | None, list[tuple[str, Any]]]]:
    """(field, input model paths, base model path, [(field, layer_range)]) for each group merged together."""
    base = merge.get("base_model")
    if merge.get("models"):
        paths = [model_path(m["model"]) for m in merge["models"] if isinstance(m, dict) and "model" in m]
        yield "merge.models", paths, model_path(base) if base else None, []
    for i, out_slice in enumerate(merge.get("slices") or []):
        sources = out_slice.get("sources") or []
        slice_base = out_slice.get("base_model") or base
        paths = [model_path(s["model"]) for s in sources if "model" in s]
        ranges = [(f"merge.slices.{i}.sources.{j}.layer_range", s.get("layer_range")) for j, s in enumerate(sources)]
        yield f"merge.slices.{i}.sources", paths, model_path(slice_base) if slice_base else None, ranges


def check_merge(candidate: Candidate, allow_pickle: bool = False, trust_remote_code: bool = False) -> Report:
    """Everything mergekit would fail on, or silently get wrong, as one line per fault."""
    from mergekit.common import dtype_from_name
    from mergekit.config import MergeConfiguration
    from mergekit.merge_methods import registry

    report = Report()
    file = candidate.recipe_path

    def problem(name: str, cause: str) -> None:
        report.problems.append(Problem(file, name, cause))

    merge = candidate.merge
    try:
        MergeConfiguration.model_validate(merge)
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
            problem(f"merge.{loc}" if loc else "merge", err["msg"])
        return report
    except (RuntimeError, ValueError, TypeError) as exc:
        problem("merge", str(exc))
        return report

    method_name = merge["merge_method"]
    try:
        method = registry.get(method_name)
    except RuntimeError:
        known = ", ".join(sorted(m.spec.name for m in registry.registered_methods()))
        problem("merge.merge_method", f"unknown merge method '{method_name}'; known: {known}")
        return report

    dtype = merge.get("dtype")
    try:
        dtype_from_name(dtype)
    except RuntimeError:
        problem("merge.dtype", f"unknown dtype '{dtype}'; mergekit takes float32, float16, bfloat16")

    # Parameters: names the method knows, and the ones it can't do without.
    spec = method.spec
    known_params = {p.name for p in spec.parameters}
    given = set()
    for where, name in _parameter_keys(merge):
        given.add(name)
        if name not in known_params:
            listing = ", ".join(sorted(known_params)) or "none"
            problem(where, f"unknown parameter '{name}' for {method_name} (it takes: {listing})")
    for p in spec.parameters:
        if p.required and p.name not in given:
            problem("merge.parameters", f"{method_name} needs parameter '{p.name}'")

    # Models: present, readable, safe to load.
    infos: dict[str, ModelInfo] = {}
    seen: set[str] = set()
    for where, ref in model_refs(merge):
        path = model_path(ref)
        if path in seen:
            continue
        seen.add(path)
        try:
            info = inspect_model(ref)
        except LookupError as exc:
            problem(where, str(exc))
            continue
        infos[path] = info
        if info.pickle_only and not allow_pickle:
            problem(where, f"'{path}' ships only pickled weights (can run code on load); pass --allow-pickle to accept")
        if info.needs_remote_code and not (trust_remote_code or candidate.trust_remote_code):
            problem(where, f"'{path}' needs custom code; set `trust_remote_code: true` or pass --trust-remote-code")
    if report.problems:
        return report

    merged_infos = list(infos.values())
    archs = {info.architecture for info in merged_infos}
    if len(archs) > 1:
        listing = ", ".join(f"{p} is {i.architecture}" for p, i in infos.items())
        problem("merge", f"mismatched architectures: {listing}")
        return report

    tokenizer_given = bool(merge.get("tokenizer_source") or merge.get("tokenizer"))
    for group_field, paths, base, ranges in _input_groups(merge):
        ids = list(dict.fromkeys(paths + ([base] if base and merge.get("models") else [])))
        try:
            spec.contract.validate_ids(ids, base)
        except ValueError as exc:
            problem(group_field, f"{method_name}: {exc}")
        for (range_field, layer_range), path in zip(ranges, paths):
            n = infos[path].num_layers
            start, end = layer_range
            if not 0 <= start < end <= n:
                problem(
                    range_field, f"layer_range [{start}, {end}] is not inside '{path}' (layers 0..{n}, start < end)"
                )
        spans = {end - start for (_, (start, end)) in ranges}
        if len(spans) > 1:
            problem(group_field, f"sources cover different numbers of layers ({sorted(spans)}); they must match")
        if len(set(paths + ([base] if base else []))) > 1:
            _check_shapes(
                group_field,
                [infos[p] for p in dict.fromkeys(paths + ([base] if base else []))],
                bool(merge.get("models")),
                tokenizer_given,
                problem,
            )

    tokenizer_source = merge.get("tokenizer_source")
    if tokenizer_source == "base" and not merge.get("base_model"):
        problem("merge.tokenizer_source", "'base' needs a base_model")

    tied = {path: info.tied_embeddings for path, info in infos.items()}
    if len(set(tied.values())) > 1:
        listing = ", ".join(f"{p}: {'tied' if t else 'untied'}" for p, t in tied.items())
        report.notes.append(Problem(file, "merge", f"lm_head is tied in some inputs only ({listing})"))
    return report


def _check_shapes(group_field: str, infos: list[ModelInfo], whole_models: bool, tokenizer_given: bool, problem) -> None:
    """Tensors merged together must have one shape; vocabularies must match or be reconciled."""
    first = infos[0]
    for other in infos[1:]:
        keys = SHAPE_KEYS + (("num_hidden_layers",) if whole_models else ())
        for key in keys:
            a, b = first.config.get(key), other.config.get(key)
            if a != b:
                problem(group_field, f"{key} differs: {first.ref} has {a}, {other.ref} has {b}")
        if tokenizer_given:
            continue
        va, vb = first.config.get("vocab_size"), other.config.get("vocab_size")
        if va != vb:
            problem(
                group_field,
                f"vocab_size differs ({first.ref}: {va}, {other.ref}: {vb}); "
                "add tokenizer_source (e.g. union) or a tokenizer section",
            )
        ta, tb = first.tokenizer, other.tokenizer
        if ta and tb and ta.special_tokens != tb.special_tokens:
            diff = sorted(
                k
                for k in set(ta.special_tokens) | set(tb.special_tokens)
                if ta.special_tokens.get(k) != tb.special_tokens.get(k)
            )
            problem(
                group_field,
                f"special tokens differ between {first.ref} and {other.ref} ({', '.join(diff)}); "
                "add tokenizer_source or a tokenizer section",
            )
