"""Command-line flags generated from a settings model, as mergekit generates its flags from its options model:
one option set, one set of defaults and one help text for the flag and the recipe."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable

import typer
from pydantic import BaseModel, ValidationError

from merger.core.errors import Problem, UserError, problems_from

# Flags several verbs share, declared once.
DEVICE = typer.Option("auto", "--device", help="cpu, cuda or auto.")
SHARD_SIZE = typer.Option("5GB", "--shard-size", help="Largest safetensors shard, e.g. 5GB.")
FORCE = typer.Option(False, "--force", help="Replace a non-empty output folder.")
ALLOW_PICKLE = typer.Option(False, "--allow-pickle", help="Accept models that ship only pickled weights.")
TRUST_CODE = typer.Option(False, "--trust-remote-code", help="Accept and run models' custom code.")
VERBOSE = typer.Option(False, "--verbose", help="Show the libraries' own logs, warnings and progress bars.")
STRICT = typer.Option(False, "--strict", help="Treat notes (keys mergekit ignores, extrapolating values) as errors.")
SEED = typer.Option(None, "--random-seed", help="Seed of randomized merges (default: the recipe's, else from the id).")
NO_CACHE = typer.Option(
    False, "--no-cache", help="Score every item again instead of reading the per-item cache ($MERGER_HOME/items)."
)
LORA_CACHE = typer.Option(None, "--lora-merge-cache", help="Where LoRA inputs are merged (default: merger's cache).")


def item_cache(no_cache: bool):
    """Where `--no-cache` leaves the per-item cache: its folder, or None (off)."""
    from merger.evaluate.cache import default_root

    return None if no_cache else default_root()


def _members(annotation) -> tuple:
    return typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)


def _cli_type(annotation) -> tuple[type, bool]:
    """(the flag's type, whether a comma-separated value becomes a list) for a settings field's annotation."""
    members = _members(annotation)
    if any(typing.get_origin(m) is list for m in members):
        return str | None, True
    if any(typing.get_origin(m) is dict for m in members):
        return str | None, False  # `K` or `task=K,...`: the settings model parses it
    if typing.get_origin(annotation) is typing.Literal:
        return str, False
    return (members[0] | None if type(None) in members else annotation), False


def settings_options(
    model: type[BaseModel], command: str = "merger", defaults: bool = True
) -> tuple[list[inspect.Parameter], Callable[[dict], BaseModel]]:
    """Flags generated from a settings model (one option set, one set of defaults, for the flag and the recipe), and
    how to build the model from their values. Without `defaults`, a flag not given is None (the recipe's holds)."""
    params, lists = [], set()
    for name, info in model.model_fields.items():
        kind, is_list = _cli_type(info.annotation)
        lists |= {name} if is_list else set()
        default = (
            ...
            if info.is_required()
            else (info.default if defaults and (not is_list or isinstance(info.default, str)) else None)
        )
        option = typer.Option(default, "--" + name.replace("_", "-"), help=info.description)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind))

    def build(values: dict) -> BaseModel:
        given = {k: v for k, v in values.items() if k in model.model_fields and v is not None}
        for name in lists & set(given):
            text = given[name]
            given[name] = (
                text
                if "," not in text and str in _members(model.model_fields[name].annotation)
                else [part.strip() for part in text.split(",") if part.strip()]
            )
        try:
            return model.model_validate(given)
        except ValidationError as exc:
            raise UserError(
                [Problem(p.file, "--" + p.field.replace("_", "-"), p.cause) for p in problems_from(exc, command)]
            ) from None

    return params, build


def with_settings_flags(fn: Callable, model: type[BaseModel], defaults: bool = True) -> Callable[[dict], BaseModel]:
    """Give `fn` (whose `**settings` collects them) one flag per field of `model`; returns how to build the model
    (without `defaults`: the flags given, checked, as a dict over a recipe's section)."""
    params, build = settings_options(model, f"merger {fn.__name__.rstrip('_')}", defaults)
    own = [p for p in inspect.signature(fn).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    fn.__signature__ = inspect.Signature(own + params)
    if defaults:
        return build

    def given(values: dict) -> dict:
        checked = build(values)
        return {k: getattr(checked, k) for k, v in values.items() if k in model.model_fields and v is not None}

    return given
