"""Recipe files: parsing, sweep-grid expansion and the SOLAR depth up-scaling shorthand.

A recipe is either a plain mergekit config (accepted unchanged) or a merger recipe that wraps one under
`merge:` and adds `sweep:` (and, for later stages, `train:` or its one-step shorthand `dpo:`, `eval:`,
`select:`). Sweep axes live only under `sweep:`, keyed by a dotted path into the recipe, so a list inside the
mergekit config is always what mergekit says it is (a gradient) and never mistaken for an axis.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from merger.config.train import DPOSettings, TrainStep, inserted_layers, upscaled_from
from merger.core.errors import Problem, UserError, problems_from
from merger.core.hf import cache_root, inspect_model


class DepthUpscale(BaseModel):
    """SOLAR-style depth up-scaling: two copies of one model, the top `overlap` and bottom `overlap` layers cut."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="The model to up-scale: a local folder or a hub id.")
    overlap: int = Field(gt=0, description="Layers cut from each copy where they meet (SOLAR: 8 of 32).")
    layers: int | None = Field(None, gt=0, description="The model's layer count (default: read from config.json).")
    dtype: str | None = Field(None, description="mergekit's output dtype.")
    tokenizer_source: str | None = Field(None, description="mergekit's tokenizer_source.")
    chat_template: str | None = Field(None, description="mergekit's chat_template.")
    preserve: bool = Field(
        False,
        description="Start the inserted layers as identities (LLaMA Pro's zeroed output projections, o_proj and "
        "down_proj, through passthrough's scale): the up-scaled model computes what the source computes.",
    )

    def to_mergekit(self, layers: int) -> dict[str, Any]:
        """Passthrough slices [0, n-overlap] + [overlap, n]: SOLAR's 32 layers with overlap 8 give 48. With
        `preserve`, the second copy's repeated layers [overlap, n-overlap] get their output projections scaled to 0,
        so each adds nothing to the residual stream: layers 0..n-1 run as in the source, with identities between."""
        low, high = [0, layers - self.overlap], [self.overlap, layers]
        slices = [{"sources": [{"model": self.model, "layer_range": r}]} for r in (low, high)]
        if self.preserve:
            zeroed = {
                "scale": [{"filter": "o_proj", "value": 0.0}, {"filter": "down_proj", "value": 0.0}, {"value": 1.0}]
            }
            inserted = {"model": self.model, "layer_range": [self.overlap, layers - self.overlap], "parameters": zeroed}
            slices[1:] = [{"sources": [inserted]}] if self.overlap < layers - self.overlap else []
            slices.append({"sources": [{"model": self.model, "layer_range": [layers - self.overlap, layers]}]})
        config: dict[str, Any] = {"merge_method": "passthrough", "slices": slices}
        for key in ("dtype", "tokenizer_source", "chat_template"):
            if getattr(self, key) is not None:
                config[key] = getattr(self, key)
        return config


class EvalSettings(BaseModel):
    """`eval:` - what every candidate is scored on, and `merger eval`'s flags; the same items for every candidate."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[str] = Field(
        default_factory=lambda: ["merger_arithmetic"],
        min_length=1,
        description="lm-eval task, group or tag names, or a preset (openllm-v1, openllm-v2).",
    )
    limit: int | None = Field(None, gt=0, description="Items per task, a seeded sample (default: all).")
    num_fewshot: int | dict[str, int] | None = Field(
        None, description="Shots, K for every task or task=K,... (default: the preset's, else the task's)."
    )
    include_path: list[str] = Field(default_factory=list, description="Folders of your own lm-eval task YAMLs.")
    data_dir: str | None = Field(
        None, description="Local mirror of hub datasets: DIR/<owner>/<name>/<config or default>/<split>.jsonl."
    )
    seed: int = Field(1234, description="Seed of the item sample: the same items for every candidate.")
    fewshot_seed: int = Field(1234, description="Seed of lm-eval's few-shot sampler.")
    apply_chat_template: bool = Field(False, description="Render prompts with the model's chat template.")
    fewshot_as_multiturn: bool = Field(True, description="With a chat template: few-shot examples as chat turns.")
    system_instruction: str | None = Field(None, description="A system message put before every prompt.")
    backend: str = Field(
        "merger",
        description="Who runs the model (`evaluate/backends/`): merger's fast scorer, or lm-eval's hf or vllm "
        "models; vllm scores models on disk, so a sweep saves each candidate first.",
    )
    batch_size: int | None = Field(None, gt=0, description="Items per batch (default: by device).")
    gen_kwargs: dict[str, Any] | None = Field(
        None, description="Generation arguments over the tasks' own, as lm-eval's --gen_kwargs (max_gen_toks=64)."
    )

    @field_validator("gen_kwargs", mode="before")
    @classmethod
    def _parse_gen_kwargs(cls, value: Any) -> Any:
        """`max_gen_toks=64,temperature=0`, as lm-eval's flag takes it."""
        if not isinstance(value, str):
            return value
        from lm_eval.utils import simple_parse_args_string

        return simple_parse_args_string(value)

    @field_validator("num_fewshot", mode="before")
    @classmethod
    def _parse_shots(cls, value: Any) -> Any:
        """`5`, or `arc_challenge=25,hellaswag=10` (as the flag gives it)."""
        if not isinstance(value, str):
            return value
        try:
            if "=" not in value:
                return int(value)
            return {k.strip(): int(v) for k, v in (part.split("=", 1) for part in value.split(","))}
        except ValueError:
            raise ValueError(f"'{value}' is not a number or a task=number list") from None


class SelectSettings(BaseModel):
    """`select:` - how the winner is chosen and how its score is reported."""

    model_config = ConfigDict(extra="forbid")

    metric: str = Field("mean", description="'mean' of the tasks' headline metrics, or one task's name.")
    strategy: Literal["grid", "halving"] = Field(
        "halving",
        description="halving (the default: it picked within delta most often in merger's selection study): budgeted "
        "successive halving, every candidate on a few items, the better half on twice as many, ... within "
        "select.budget; grid: every candidate on every item (eval.limit per task).",
    )
    budget: float = Field(
        0.2,
        gt=0,
        le=1,
        description="halving: the share of every candidate on every item (K candidates x the smallest task's items, "
        "at most eval.limit: what a grid would score) a sweep may spend; the rungs are the largest that fit.",
    )
    keep: int = Field(1, gt=0, description="Candidates whose weights are kept.")
    report_items: int | None = Field(
        None,
        gt=0,
        description="Items, disjoint from the selection items, that the winner's published score is measured on.",
    )
    min_items: int | None = Field(
        None, gt=0, description="Racing: items per task of the first slice (default: limit / eta^2)."
    )
    eta: int = Field(
        2, gt=1, description="Each slice eta times the items of the last; halving keeps 1/eta of the candidates."
    )
    signal: Literal["metric", "prob", "auto"] = Field(
        "metric",
        description="What every paired decision (ties, racing, halving, search pruning) compares item by item: the "
        "task's headline metric (the default: it picked within delta more often in merger's selection study), or the "
        "gold choice's probability (prob; auto: where a task has one, else the metric). The leaderboard reports the "
        "metric either way, but with prob a race's guarantees are about the best candidate by the mean gold-choice "
        "probability, not by the metric reported.",
    )
    references: bool = Field(
        False,
        description="Also score the sweep's local input models, as they are, on the same items: reference rows that "
        "say whether a merge beat the models it came from; never kept.",
    )
    race: bool = Field(
        False,
        description="Score in growing slices (min_items, eta times as many, ... up to eval.limit), stop a candidate "
        "once it is shown worse than the leader, and stop the sweep once the leader is within delta of every other.",
    )
    confidence: float = Field(
        0.95, gt=0, lt=1, description="How sure a race's claims must be, over all its comparisons and looks together."
    )
    delta: float = Field(
        1.0,
        ge=0,
        description="The indifference zone, in points (hundredths) of the deciding signal: a leader within delta of "
        "every other candidate ends the race.",
    )


class ExecuteSettings(BaseModel):
    """`execute:` - where a sweep's work runs; the `merger sweep` flags of the same names override it."""

    model_config = ConfigDict(extra="forbid")

    executor: str = Field(
        "local", description="local: in this process, one unit at a time; ray: one worker per GPU on a Ray cluster."
    )
    ray_address: str | None = Field(
        None, description="Ray: a running cluster ('auto' or HOST:PORT); default: start one on this machine."
    )
    workers: int | None = Field(
        None, gt=0, description="Ray: how many workers (default: one per GPU, else one per cpus_per_worker cores)."
    )
    cpus_per_worker: int = Field(1, gt=0, description="Ray, without GPUs: CPU cores each worker uses.")


class Dimension(BaseModel):
    """One searched value: a range (`low`, `high`, optional `step` and `log`) or a list of `choices`."""

    model_config = ConfigDict(extra="forbid")

    low: float | None = Field(None, description="Range: the smallest value.")
    high: float | None = Field(None, description="Range: the largest value.")
    step: float | None = Field(None, gt=0, description="Range: only multiples of this above `low`.")
    log: bool = Field(False, description="Range: sample on a log scale (low > 0, no step).")
    choices: list[Any] | None = Field(None, min_length=1, description="The values it takes, instead of a range.")

    @model_validator(mode="after")
    def _range_or_choices(self) -> Dimension:
        ranged = self.low is not None or self.high is not None
        if self.choices is not None:
            if ranged or self.step is not None or self.log:
                raise ValueError("give either choices or a range (low, high), not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high (or give choices)")
        if self.low > self.high:
            raise ValueError(f"low {self.low:g} is above high {self.high:g}")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("a log range needs low > 0 and no step")
        return self


class SearchSettings(BaseModel):
    """`search:` - look for the best point of a space with an Optuna sampler instead of listing a grid."""

    model_config = ConfigDict(extra="forbid")

    sampler: Literal["tpe", "cmaes", "random"] = Field("tpe", description="Optuna's sampler.")
    trials: int = Field(gt=0, description="Candidates to try: the budget.")
    seed: int = Field(0, description="The sampler's seed: the same proposals on every run and resume.")
    space: dict[str, Dimension] = Field(
        min_length=1, description="Dotted path into the recipe (as in `sweep:`, list indices allowed) -> its range."
    )
    pruner: Literal["paired", "halving", "none"] = Field(
        "paired",
        description="Stop a trial early: paired, once racing shows it worse than the leader (at select.confidence); "
        "halving, by Optuna's successive-halving pruner; none: every trial on every item.",
    )
    min_items: int | None = Field(
        None, gt=0, description="Items per task of a trial's first slice (default: eval.limit / eta^2)."
    )
    eta: int = Field(2, gt=1, description="Each slice eta times the last, up to eval.limit.")


class RefineStage(BaseModel):
    """One stage of `refine:`: the best `top` candidates of the stage before (ranked on the same items, whether or
    not they beat their own parents), each trained further into a child (`train:`), or merged again (`merge:`), or
    added one by one to a greedy soup (`soup: true`)."""

    model_config = ConfigDict(extra="forbid")

    top: int = Field(gt=0, description="How many of the stage before's best candidates it refines.")
    train: list[TrainStep] = Field(default_factory=list, description="The training steps each of them gets, in order.")
    merge: dict[str, Any] | None = Field(
        None,
        description="A mergekit config each of them is merged with, in which `@candidate` (the one refined), "
        "`@parent` (its parent) and `@top1`, `@top2`, ... (the stage before's best) name earlier candidates.",
    )
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Axes of this stage's merge: a dotted path under `merge.` -> the values it takes (one child per "
        "refined candidate and point).",
    )
    soup: bool = Field(
        False,
        description="A greedy soup (Wortsman et al., 2022): the top candidates in score order, each added to a uniform "
        "linear average unless the new average is shown worse than the soup so far, on the same items.",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> RefineStage:
        if sum((bool(self.train), self.merge is not None, self.soup)) != 1:
            raise ValueError(
                "give exactly one of `train:` (training steps), `merge:` (a mergekit config), `soup: true`"
            )
        if self.sweep and self.merge is None:
            raise ValueError("`sweep:` sweeps a stage's `merge:`, and this stage has none")
        for axis, values in self.sweep.items():
            if not axis.startswith("merge.") or not values:
                raise ValueError(f"axis '{axis}': a stage's axes are paths under `merge.`, each with values")
        return self

    @property
    def kind(self) -> str:
        """Which `sweep/stages/` module makes its children: train, merge or soup."""
        return "train" if self.train else "merge" if self.merge is not None else "soup"


class Recipe(BaseModel):
    """The file format users write. The mergekit config under `merge:` is kept as given and checked by the
    merge stage against mergekit itself."""

    model_config = ConfigDict(extra="forbid")

    merge: dict[str, Any] | None = Field(None, description="A mergekit config, unchanged.")
    depth_upscale: DepthUpscale | None = Field(None, description="SOLAR-style depth up-scaling, instead of merge.")
    upstream: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Named mergekit configs that `merge:` (or a later one) takes as inputs by name, as the documents "
        "of a mergekit-multi file do; each is merged once, into a folder named by its content.",
    )
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Axes: a dotted path into the recipe (list indices allowed) -> the values it takes.",
    )
    trust_remote_code: bool = Field(False, description="Run the input models' custom code.")
    random_seed: int | None = Field(
        None,
        description="Seed of randomized merges (dare, della); default: derived "
        "from the candidate id, so every run and machine gives the same tensors.",
    )
    strict: bool = Field(
        False,
        description="Treat notes (keys and parameters mergekit ignores, values outside the "
        "range a method interpolates in) as errors.",
    )
    train: list[TrainStep] = Field(
        default_factory=list,
        description="Training steps after the merge, in order, each on the one before's output: `- pretrain: {...}` "
        "(plain text), `- sft: {...}` (chat data), `- dpo: {...}` (preference pairs).",
    )
    dpo: DPOSettings | None = Field(
        None, description="Shorthand for `train: [{dpo: ...}]`: refine each merge with DPO."
    )
    refine: list[RefineStage] = Field(
        default_factory=list,
        description="Stages after the sweep: each trains the best `top` candidates of the stage before (ranked on "
        "the same items) into children, scored on those items too; a child is kept only when shown better than its "
        "parent.",
    )
    eval: EvalSettings = Field(default_factory=EvalSettings, description="What every candidate is scored on.")
    select: SelectSettings = Field(default_factory=SelectSettings, description="How the winner is chosen.")
    execute: ExecuteSettings = Field(default_factory=ExecuteSettings, description="Where the sweep's work runs.")
    search: SearchSettings | None = Field(None, description="Search a space instead of (or around) a grid.")

    @field_validator("sweep")
    @classmethod
    def _axes_not_empty(cls, sweep: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path, values in sweep.items():
            if not values:
                raise ValueError(f"axis '{path}' has no values")
        return sweep


class Upstream(BaseModel):
    """A named merge a candidate takes as an input: its config (names of earlier merges resolved to their folders)
    and the folder it is merged into, named by that content."""

    name: str = Field(description="Its name in the recipe (a mergekit-multi document's `name`).")
    merge: dict[str, Any] = Field(description="Its mergekit config, inputs resolved.")
    path: str = Field(description="The folder it is merged into: MERGER_HOME/merges/<name>-<content hash>.")


class Candidate(BaseModel):
    """One point of a recipe's sweep grid, fully resolved: what gets merged, and how it was derived."""

    id: str = Field(description="First 10 hex digits of SHA-256 of the resolved merge and training steps.")
    recipe_path: str = Field(description="The recipe file it came from.")
    params: dict[str, Any] = Field(description="Its sweep point: axis path -> value.")
    merge: dict[str, Any] = Field(description="The resolved mergekit config.")
    upstream: list[Upstream] = Field(
        default_factory=list, description="The named merges it takes as inputs, in the order they are made."
    )
    trust_remote_code: bool = Field(False, description=Recipe.model_fields["trust_remote_code"].description)
    random_seed: int = Field(description="The seed its merge runs with: the recipe's, or derived from its id.")
    strict: bool = Field(False, description=Recipe.model_fields["strict"].description)
    notes: list[str] = Field(default_factory=list, description="What validation noted about it.")
    train: list[TrainStep] = Field(default_factory=list, description=Recipe.model_fields["train"].description)
    refine: list[RefineStage] = Field(default_factory=list, description=Recipe.model_fields["refine"].description)
    parent: str | None = Field(
        None, description="A refined child's parent: the candidate it trained further, or a merged child's best input."
    )
    stage: int = Field(0, description="0 for the sweep's own candidates; k for a child of refine stage k.")
    inputs: list[str] = Field(
        default_factory=list, description="A merged child's inputs: the earlier candidates it merges, by id."
    )
    reference: str | None = Field(None, description="A reference row: this input model, scored as it is, never kept.")
    eval: EvalSettings = Field(default_factory=EvalSettings, description=Recipe.model_fields["eval"].description)
    select: SelectSettings = Field(
        default_factory=SelectSettings, description=Recipe.model_fields["select"].description
    )
    execute: ExecuteSettings = Field(
        default_factory=ExecuteSettings, description=Recipe.model_fields["execute"].description
    )
    search: SearchSettings | None = Field(None, description=Recipe.model_fields["search"].description)

    def field(self, name: str) -> str:
        """The recipe field a problem points at; sweep parameters are named too, so the user knows which point."""
        if not self.params:
            return name
        point = ", ".join(f"{k}={json.dumps(v)}" for k, v in self.params.items())
        return f"{name} (candidate {self.id}: {point})"


SECTIONS = tuple(Recipe.model_fields)


def input_models(merge: dict[str, Any]) -> list[str]:
    """The models a mergekit config merges (mergekit's own answer), in a stable order; [] for a config mergekit
    refuses (the merge stage's checks say why)."""
    from mergekit.config import MergeConfiguration

    try:
        config = MergeConfiguration.model_validate(merge)
    except (ValidationError, RuntimeError, ValueError, TypeError):
        return []
    return sorted({str(ref) for ref in config.referenced_models()})


def output_layers(merge: dict[str, Any]) -> int | None:
    """Layers of the merged model when the config stacks slices; None when it keeps its inputs' count."""
    slices = merge.get("slices") or []
    if not slices:
        return None
    return sum(s["sources"][0]["layer_range"][1] - s["sources"][0]["layer_range"][0] for s in slices)


def _multi(path: Path, docs: list[Any]) -> dict[str, Any]:
    """A mergekit-multi file: every document a mergekit config, the named ones made first and referred to by name.
    Its final merge is the unnamed document (mergekit-multi's --out-path), else the last one."""
    if not all(isinstance(d, dict) and "merge_method" in d for d in docs):
        raise UserError.one(
            str(path),
            "",
            "a file of several YAML documents must be a mergekit-multi file: each document a mergekit config",
        )
    unnamed = [i for i, d in enumerate(docs) if "name" not in d]
    if len(unnamed) > 1:
        raise UserError.one(
            str(path), "name", "several documents have no name; mergekit-multi takes one unnamed (final) merge"
        )
    final = unnamed[0] if unnamed else len(docs) - 1
    upstream: dict[str, dict[str, Any]] = {}
    for number, doc in enumerate(docs):
        if number != final:
            name = str(doc["name"])
            if name in upstream:
                raise UserError.one(str(path), f"document {number + 1}", f"duplicate merge name '{name}'")
            upstream[name] = {k: v for k, v in doc.items() if k != "name"}
    return {"merge": {k: v for k, v in docs[final].items() if k != "name"}, "upstream": upstream}


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    """Read YAML; a bare mergekit config is wrapped as `merge:` so both spellings mean the same."""
    path = Path(path)
    if not path.is_file():
        raise UserError.one(str(path), "", "no such recipe file")
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
        data = docs[0] if len(docs) == 1 else _multi(path, docs) if docs else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError.one(str(path), where, f"not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise UserError.one(str(path), "", "a recipe must be a YAML mapping (a mergekit config or merger recipe)")
    if "merge_method" in data:
        return {"merge": data}
    return data


def parse_recipe(path: str | Path, data: dict[str, Any]) -> Recipe:
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise UserError(problems_from(exc, str(path), extra_hint=f"a recipe has {', '.join(SECTIONS)}")) from None
    if (recipe.merge is None) == (recipe.depth_upscale is None):
        raise UserError.one(str(path), "merge", "give exactly one of `merge:` (a mergekit config) or `depth_upscale:`")
    if recipe.dpo is not None and recipe.train:
        raise UserError.one(str(path), "dpo", "give DPO as the last step of `train:` (`- dpo: {...}`), not beside it")
    return recipe


def _set_path(data: dict[str, Any], path: str) -> tuple[Any, Any]:
    """Find the container and key a dotted path names; every step but the last must already exist."""
    parts = path.split(".")
    sections = [name for name in SECTIONS if name not in ("sweep", "search", "trust_remote_code", "strict")]
    if parts[0] not in sections:
        raise KeyError(f"must start with a recipe section ({', '.join(sections)}), not '{parts[0]}'")
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.lstrip("-").isdigit():
                raise KeyError(f"'{part}' indexes a list and must be a number")
            index = int(part)
            if not -len(node) <= index < len(node):
                raise KeyError(f"index {index} is outside a list of {len(node)}")
            key: Any = index
        elif isinstance(node, dict):
            if part not in node and not last:
                raise KeyError(f"'{'.'.join(parts[: depth + 1])}' does not exist in the recipe")
            key = part
        else:
            raise KeyError(f"'{'.'.join(parts[:depth])}' is a value, not a mapping or list")
        if last:
            return node, key
        node = node[key]
    raise KeyError("empty path")


def _model_layers(path: Path, ref: str) -> int:
    """`depth_upscale` without `layers:` reads the count from the model's config.json."""
    try:
        return inspect_model(ref).num_layers
    except LookupError as exc:
        raise UserError.one(str(path), "depth_upscale.model", str(exc)) from None


def candidate_id(merge: dict[str, Any], train: list[TrainStep], random_seed: int | None = None) -> str:
    """Stable across runs and machines: a changed recipe gives new ids, an unchanged one the same ids. Training
    settings count with their defaults filled in, so spelling a default out changes nothing; a seed counts when
    given."""
    content: dict[str, Any] = {"merge": merge, "dpo": None}
    if train:
        content = {"merge": merge, "train": [step.dump() for step in train]}
    if random_seed is not None:
        content["random_seed"] = random_seed
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def child(parent: Candidate, stage: int) -> Candidate:
    """Refine stage `stage`'s child of `parent`: the same merge (and seed), its training steps and the stage's; its
    id is built over the parent's id and the stage's steps."""
    steps = parent.refine[stage - 1].train
    key = json.dumps([parent.id, [step.dump() for step in steps]], sort_keys=True, separators=(",", ":"))
    return parent.model_copy(
        update={
            "id": hashlib.sha256(key.encode()).hexdigest()[:10],
            "train": parent.train + steps,
            "parent": parent.id,
            "stage": stage,
        }
    )


def reference(path: str, like: Candidate) -> Candidate:
    """An input model scored as it is beside `like`'s sweep (`select.references`): a reference row, never kept."""
    empty = {
        "params": {},
        "merge": {},
        "upstream": [],
        "train": [],
        "refine": [],
        "parent": None,
        "notes": [],
        "inputs": [],
    }
    return like.model_copy(
        update={"id": "r" + hashlib.sha256(path.encode()).hexdigest()[:9], "reference": path, **empty}
    )


def seed_from_id(cid: str) -> int:
    """The default seed of a candidate: its id read as a number, the same on every run and machine."""
    return int(cid, 16) % 2**31


def _point(path: Path, base: dict[str, Any], params: dict[str, Any], random_seed: int | None) -> Candidate:
    """The candidate at one point of a recipe: `params` (dotted path -> value) set in the recipe `base`."""
    resolved = copy.deepcopy(base)
    for axis, value in params.items():
        container, key = _set_path(resolved, axis)
        container[key] = copy.deepcopy(value)
    point_recipe = parse_recipe(path, resolved)
    if point_recipe.depth_upscale is not None:
        dus = point_recipe.depth_upscale
        layers = dus.layers
        if layers is None:
            layers = _model_layers(path, dus.model)
        if dus.overlap * 2 > layers:
            raise UserError.one(
                str(path),
                "depth_upscale.overlap",
                f"overlap {dus.overlap} is more than half of the model's {layers} layers",
            )
        merge = dus.to_mergekit(layers)
    else:
        merge = point_recipe.merge or {}
    train = point_recipe.train or ([TrainStep(dpo=point_recipe.dpo)] if point_recipe.dpo else [])
    _check_steps(path, merge, steps_of(train, point_recipe.refine))
    merge, content, upstream = _upstream(path, point_recipe.upstream, merge)
    seed = random_seed if random_seed is not None else point_recipe.random_seed
    cid = candidate_id(content, train, seed)
    return Candidate(
        id=cid,
        recipe_path=str(path),
        params=dict(params),
        merge=merge,
        upstream=upstream,
        trust_remote_code=point_recipe.trust_remote_code,
        random_seed=seed if seed is not None else seed_from_id(cid),
        strict=point_recipe.strict,
        train=train,
        refine=point_recipe.refine,
        eval=point_recipe.eval,
        select=point_recipe.select,
        execute=point_recipe.execute,
    )


REF_KEYS = ("model", "base_model", "tokenizer_source", "source")  # where a mergekit config names a model


def config_entries(node: dict[str, Any], prefix: str = "merge") -> Iterator[tuple[str, str, Any]]:
    """Every (field path, key, value) of a nested config, mappings inside lists included."""
    for key, value in node.items():
        here = f"{prefix}.{key}"
        yield here, key, value
        if isinstance(value, dict):
            yield from config_entries(value, here)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    yield from config_entries(item, f"{here}.{i}")


def model_refs(merge: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Every (field path, model reference) in a mergekit config, parameters excluded: the one walker over the
    places a config names a model (`model`, `base_model`, a tokenizer's source that is not `union` or `base`)."""
    for path, key, value in config_entries(merge):
        if ".parameters" in path or not isinstance(value, str):
            continue
        if key in ("model", "base_model") or (key in ("tokenizer_source", "source") and value not in ("union", "base")):
            yield path, value


def _substitute(node: Any, names: dict[str, str]) -> Any:
    """`node` with every model reference to a named merge (`name`, or `name+lora`) replaced by names[name]."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in REF_KEYS and isinstance(value, str) and value.split("+")[0] in names:
                base, plus, lora = value.partition("+")
                out[key] = names[base] + plus + lora
            else:
                out[key] = value if key == "parameters" else _substitute(value, names)
        return out
    if isinstance(node, list):
        return [_substitute(value, names) for value in node]
    return node


def _upstream(
    path: Path, upstream: dict[str, dict[str, Any]], merge: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], list[Upstream]]:
    """(the merge with named inputs resolved to their folders, the same with them resolved to their content hashes
    (what the candidate id is made of, the same on every machine), the named merges it needs in the order they are
    made). A named merge's folder is named by its content, its inputs' contents included: a changed upstream
    document changes exactly the folders of what depends on it."""
    if not upstream:
        return merge, merge, []
    needs = {name: {r.split("+")[0] for _, r in model_refs(doc)} & set(upstream) for name, doc in upstream.items()}
    order: list[str] = []

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            raise UserError.one(str(path), f"upstream.{name}", "refers to itself: " + " -> ".join(trail + [name]))
        if name not in order:
            for before in sorted(needs[name]):
                visit(before, trail + [name])
            order.append(name)

    for name in sorted({r.split("+")[0] for _, r in model_refs(merge)} & set(upstream)):
        visit(name, [])
    folders, hashes, made = {}, {}, []
    for name in order:
        digest = hashlib.sha256(
            json.dumps(_substitute(upstream[name], hashes), sort_keys=True, default=str).encode()
        ).hexdigest()[:12]
        hashes[name] = f"@{name}-{digest}"
        folders[name] = str(cache_root() / "merges" / f"{name}-{digest}")
        made.append(Upstream(name=name, merge=_substitute(upstream[name], folders), path=folders[name]))
    return _substitute(merge, folders), _substitute(merge, hashes), made


def steps_of(train: list[TrainStep], refine: list[RefineStage]) -> list[tuple[str, TrainStep]]:
    """Every training step a recipe names, with where it is: `train.N.kind`, `refine.N.train.M.kind`."""
    found = [(f"train.{n}.{step.kind}", step) for n, step in enumerate(train)]
    for n, stage in enumerate(refine):
        found += [(f"refine.{n}.train.{m}.{step.kind}", step) for m, step in enumerate(stage.train)]
    return found


def _check_steps(path: Path, merge: dict[str, Any], steps: list[tuple[str, TrainStep]]) -> None:
    """What a training step needs from the merge before it: repeated layers for `layers: inserted`, a single
    up-scaled model for a distillation teacher left to its default."""
    problems = []
    for where, step in steps:
        settings = step.settings
        if settings.layers == "inserted" and not inserted_layers(merge):
            problems.append(
                Problem(str(path), f"{where}.layers", "'inserted' needs a depth up-scale (layers repeated)")
            )
        if getattr(settings, "distill", False) and not settings.teacher and upscaled_from(merge) is None:
            problems.append(
                Problem(
                    str(path), f"{where}.teacher", "distill needs a teacher (it defaults only for a depth up-scale)"
                )
            )
    if problems:
        raise UserError(problems)


def _base(path: Path) -> tuple[Recipe, dict[str, Any]]:
    data = read_recipe_file(path)
    return parse_recipe(path, data), {k: v for k, v in data.items() if k not in ("sweep", "search")}


class Points:
    """A recipe read once (a search's: its space checked), and the candidate at any point of it."""

    def __init__(self, path: str | Path, random_seed: int | None = None):
        self.path, self.random_seed = Path(path), random_seed
        recipe, self.base = _base(self.path)
        self.space: dict[str, Dimension] = _space(self.path, recipe, self.base) if recipe.search else {}

    def at(self, params: dict[str, Any]) -> Candidate:
        """The candidate a search proposes: the recipe with `params` set (its `sweep:` and `search:` aside)."""
        return _point(self.path, self.base, params, self.random_seed)


def _space(path: Path, recipe: Recipe, base: dict[str, Any]) -> dict[str, Dimension]:
    assert recipe.search is not None
    space = {axis: Dimension(choices=values) for axis, values in recipe.sweep.items()}
    problems: list[Problem] = []
    for axis, dim in recipe.search.space.items():
        where = f"search.space.{axis}"
        if axis in space:
            problems.append(Problem(str(path), where, "is also a sweep axis; give it in one place"))
            continue
        try:
            container, key = _set_path(base, axis)  # only looks
        except KeyError as exc:
            problems.append(Problem(str(path), where, str(exc.args[0])))
            continue
        if dim.choices is None:
            has = key in container if isinstance(container, dict) else True
            value = container[key] if has else None
            if not has:
                problems.append(Problem(str(path), where, "does not exist in the recipe; a range needs a number there"))
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append(
                    Problem(str(path), where, f"a range needs a number, and the recipe has {json.dumps(value)} here")
                )
        space[axis] = dim
    if problems:
        raise UserError(problems)
    return space


def expand(path: str | Path, random_seed: int | None = None) -> list[Candidate]:
    """Every candidate of a recipe's sweep grid, in grid order (the first axis varies slowest); for a search
    recipe, the one candidate the recipe is as written (checked like any other; the search proposes the rest).
    `random_seed` (`--random-seed`) overrides the recipe's."""
    path = Path(path)
    recipe, base = _base(path)
    if recipe.search is not None:
        _space(path, recipe, base)
        return [_point(path, base, {}, random_seed).model_copy(update={"search": recipe.search})]
    problems: list[Problem] = []
    for axis in recipe.sweep:
        try:
            _set_path(base, axis)  # only looks
        except KeyError as exc:
            problems.append(Problem(str(path), f"sweep.{axis}", str(exc.args[0])))
    if problems:
        raise UserError(problems)
    axes = list(recipe.sweep.items())
    return [
        _point(path, base, {axis: value for (axis, _), value in zip(axes, values)}, random_seed)
        for values in itertools.product(*(values for _, values in axes))
    ]
