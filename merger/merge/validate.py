"""Checks a candidate's mergekit config before any work starts, asking mergekit what it accepts.

mergekit itself accepts some broken configs (a reversed passthrough layer range gives a model with a
negative layer count) and fails others only after creating the output folder; each check here turns
such a config into one line naming the file, the field and the cause.
"""

from __future__ import annotations

import difflib
import functools
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ValidationError

from merger.config.recipe import Candidate, config_entries, model_refs, output_layers
from merger.core.errors import Problem, problems_from
from merger.core.hf import ModelInfo, inspect_adapter, inspect_model, is_model_folder, model_path

SHAPE_KEYS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads")
# Where a method interpolates: outside these ranges it extrapolates (t), or a weight subtracts a model.
RANGES = {
    "t": (0.0, 1.0, "interpolates between its inputs only for t in [0, 1]"),
    "density": (0.0, 1.0, "keeps a fraction of each task vector: a density in (0, 1]"),
    "weight": (0.0, None, "a negative weight subtracts that model's contribution"),
}


@dataclass
class Report:
    """Problems stop the run; notes are worth knowing but change nothing."""

    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)


def _input_groups(merge: dict[str, Any]) -> Iterator[tuple[str, list[str], str | None, list[tuple[str, Any]]]]:
    """(field, input references, base reference, [(field, layer_range)]) for each group merged together.

    A reference is mergekit's own spelling (`path`, `path+lora`): each distinct model+adapter is its own input."""

    def ref(value: str) -> str:
        from mergekit.common import ModelReference

        return str(ModelReference.model_validate(value))

    base = merge.get("base_model")
    if merge.get("models"):
        refs = [ref(m["model"]) for m in merge["models"] if isinstance(m, dict) and "model" in m]
        yield "merge.models", refs, ref(base) if base else None, []
    for i, out_slice in enumerate(merge.get("slices") or []):
        sources = out_slice.get("sources") or []
        slice_base = out_slice.get("base_model") or base
        refs = [ref(s["model"]) for s in sources if "model" in s]
        ranges = [(f"merge.slices.{i}.sources.{j}.layer_range", s.get("layer_range")) for j, s in enumerate(sources)]
        yield f"merge.slices.{i}.sources", refs, ref(slice_base) if slice_base else None, ranges


def _model_classes(annotation: Any) -> list[tuple[str, type[BaseModel]]]:
    """(shape, class) of the pydantic models inside a field's annotation: 'one', or items of a 'list' or 'dict'."""
    from mergekit.common import ModelReference

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, typing.List):  # noqa: UP006
        return [("list", cls) for shape, cls in _model_classes(args[0]) if shape == "one"]
    if origin in (dict, typing.Dict):  # noqa: UP006
        return [("dict", cls) for shape, cls in _model_classes(args[1]) if shape == "one"]
    if origin in (typing.Union, types.UnionType):
        return [found for arg in args for found in _model_classes(arg)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation is not ModelReference:
        return [("one", annotation)]
    return []


def unknown_keys(node: Any, model: type[BaseModel], where: str) -> Iterator[tuple[str, str, list[str]]]:
    """(field, key, the keys that exist there) for every key mergekit's config models do not have (mergekit
    ignores them). Parameters are checked against the merge method instead."""
    if not isinstance(node, dict):
        return
    fields = model.model_fields
    known = sorted(set(fields) | {f.alias for f in fields.values() if f.alias})
    for key, value in node.items():
        if key not in known:
            yield f"{where}.{key}", key, known
            continue
        if key == "parameters":
            continue
        classes = _model_classes(fields[key].annotation)
        lists = [cls for shape, cls in classes if shape == "list"]
        dicts = [cls for shape, cls in classes if shape == "dict"]
        ones = [cls for shape, cls in classes if shape == "one"]
        if isinstance(value, list) and len(lists) == 1:
            for i, item in enumerate(value):
                yield from unknown_keys(item, lists[0], f"{where}.{key}.{i}")
        elif isinstance(value, dict) and len(dicts) == 1 and not ones:
            for name, item in value.items():
                yield from unknown_keys(item, dicts[0], f"{where}.{key}.{name}")
        elif isinstance(value, dict) and len(ones) == 1:
            yield from unknown_keys(value, ones[0], f"{where}.{key}")


def _did_you_mean(name: str, known: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _numbers(value: Any) -> Iterator[float]:
    """The numbers of a parameter setting: a scalar, a gradient, or filtered values."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield float(value)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item.get("value") if isinstance(item, dict) else item)
    elif isinstance(value, dict):
        yield from _numbers(value.get("value"))


def _parameter_values(merge: dict[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """Every (field path, parameter name, setting) in the config, at any level."""
    for path, key, value in config_entries(merge):
        if key == "parameters" and isinstance(value, dict) and path.count(".parameters") == 1:
            for name, setting in value.items():
                yield f"{path}.{name}", name, setting


def _architecture_problem(info: ModelInfo, trusted: bool) -> str | None:
    """None when mergekit knows the architecture, or transformers can load it (mergekit then infers it)."""
    from mergekit.architecture.json_definitions import NAME_TO_ARCH
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if info.architecture in NAME_TO_ARCH or info.config.get("model_type") in CONFIG_MAPPING:
        return None
    if info.needs_remote_code and trusted:
        return None
    examples = ", ".join(sorted(n for n in NAME_TO_ARCH if n.endswith("ForCausalLM"))[:6])
    return (
        f"architecture '{info.architecture}' (model_type '{info.config.get('model_type')}') is known neither to "
        f"mergekit nor to transformers; merger merges what mergekit knows ({len(NAME_TO_ARCH)} architectures, "
        f"e.g. {examples}, ...) and what transformers can load"
    )


def _looks_like(first: str, layers: int | None, before: dict[str, Callable[[], ModelInfo]]) -> ModelInfo:
    base = before[first]() if first in before else inspect_model(first)
    return replace(base, config={**base.config, "num_hidden_layers": layers}) if layers else base


def _stand_ins(candidate: Candidate) -> dict[str, Callable[[], ModelInfo]]:
    """What a named merge not made yet looks like to the checks: its base model (else its first input) as it will
    come out, with the layers a passthrough stack gives it."""
    found: dict[str, Callable[[], ModelInfo]] = {}
    for named in candidate.upstream:
        if not is_model_folder(named.path):
            first = named.merge.get("base_model") or next(ref for _, ref in model_refs(named.merge))
            found[named.path] = functools.partial(
                _looks_like, model_path(first), output_layers(named.merge), dict(found)
            )
    return found


def check_merge(candidate: Candidate, allow_pickle: bool = False, trust_remote_code: bool = False) -> Report:
    """Everything mergekit would fail on, or silently get wrong, as one line per fault."""
    from mergekit.common import dtype_from_name
    from mergekit.config import MergeConfiguration
    from mergekit.merge_methods import registry

    report = Report()
    file = candidate.recipe_path

    def problem(name: str, cause: str) -> None:
        report.problems.append(Problem(file, name, cause))

    def note(name: str, cause: str) -> None:
        report.notes.append(Problem(file, name, cause))

    merge = candidate.merge
    source = merge.get("tokenizer_source")
    if isinstance(source, str) and source.startswith("model:"):
        problem(
            "merge.tokenizer_source",
            f"'{source}': mergekit dropped the 'model:' prefix in 2024; write '{source.removeprefix('model:')}'",
        )
        return report
    try:
        MergeConfiguration.model_validate(merge)
    except ValidationError as exc:
        report.problems.extend(problems_from(exc, file, "merge"))
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

    for where, key, known in unknown_keys(merge, MergeConfiguration, "merge"):
        note(where, f"unknown key '{key}': mergekit ignores it{_did_you_mean(key, known)}")

    # Parameters: names the method reads (others mergekit ignores), the ones it can't do without, their ranges.
    spec = method.spec
    known_params = {p.name for p in spec.parameters}
    given = set()
    for where, name, setting in _parameter_values(merge):
        given.add(name)
        if name not in known_params:
            listing = ", ".join(sorted(known_params)) or "none"
            note(
                where,
                f"'{name}' is not a parameter of {method_name}: mergekit ignores it (it takes: {listing})"
                f"{_did_you_mean(name, known_params)}",
            )
            continue
        low, high, why = RANGES.get(name, (None, None, ""))
        outside = [v for v in _numbers(setting) if (low is not None and v < low) or (high is not None and v > high)]
        if outside:
            note(where, f"{name} {outside[0]:g}: {method_name} {why}")
    for p in spec.parameters:
        if p.required and p.name not in given:
            problem("merge.parameters", f"{method_name} needs parameter '{p.name}'")

    # Models: present, readable, safe to load, of an architecture mergekit or transformers knows.
    infos: dict[str, ModelInfo] = {}
    trusted = trust_remote_code or candidate.trust_remote_code
    adapters = set()
    stand_ins = _stand_ins(candidate)
    for where, ref in model_refs(merge):
        path = model_path(ref)
        if path not in infos:
            try:
                info = stand_ins[path]() if path in stand_ins else inspect_model(ref)
            except LookupError as exc:
                problem(where, str(exc))
                infos[path] = None  # type: ignore[assignment]
                continue
            infos[path] = info
            if info.pickle_only and not allow_pickle:
                problem(
                    where, f"'{path}' ships only pickled weights (can run code on load); pass --allow-pickle to accept"
                )
            if info.needs_remote_code and not trusted:
                problem(where, f"'{path}' needs custom code; set `trust_remote_code: true` or pass --trust-remote-code")
            elif (why := _architecture_problem(info, trusted)) is not None:
                problem(where, why)
        if ref not in adapters:
            adapters.add(ref)
            _check_adapter(where, ref, infos.get(path), allow_pickle, problem, note)
    infos = {path: info for path, info in infos.items() if info is not None}
    if report.problems:
        return report

    merged_infos = list(infos.values())
    archs = {info.architecture for info in merged_infos}
    if len(archs) > 1:
        listing = ", ".join(f"{p} is {i.architecture}" for p, i in infos.items())
        problem("merge", f"mismatched architectures: {listing}")
        return report

    tokenizer_given = bool(merge.get("tokenizer_source") or merge.get("tokenizer"))
    for group_field, refs, base, ranges in _input_groups(merge):
        ids = list(dict.fromkeys(refs + ([base] if base and merge.get("models") else [])))
        try:
            spec.contract.validate_ids(ids, base)
        except ValueError as exc:
            problem(group_field, f"{method_name}: {exc}")
        paths = [model_path(r) for r in refs]
        base = model_path(base) if base else None
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


def _check_adapter(where: str, ref: str, base: ModelInfo | None, allow_pickle: bool, problem, note) -> None:
    """A `model+lora` input: the adapter is there, safe to load, and made for that model."""
    from mergekit.common import ModelReference

    lora = ModelReference.model_validate(ref).lora
    if lora is None:
        return
    try:
        adapter = inspect_adapter(lora.path, lora.revision)
    except LookupError as exc:
        problem(where, str(exc))
        return
    if adapter.pickle_only and not allow_pickle:
        problem(
            where,
            f"adapter '{lora.path}' ships only pickled weights (can run code on load); pass --allow-pickle to accept",
        )
    made_for = adapter.base_model
    if base is not None and made_for and made_for not in (base.ref.split("+")[0], base.config.get("_name_or_path")):
        note(where, f"adapter '{lora.path}' was trained on '{made_for}', here applied to '{base.ref.split('+')[0]}'")


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
