"""The mergekit adapter: one candidate in, one Hugging Face folder out, atomically."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from merger.config.recipe import Candidate, seed_from_id
from merger.core.atomic import atomic_output_dir, ensure_target_free
from merger.core.device import resolve_device
from merger.core.digest import tensor_digest
from merger.core.hf import cache_root, is_model_folder, parse_size


def merge_to_disk(
    candidate: Candidate,
    out: Path,
    *,
    device: str = "cpu",
    shard_size: str = "5GB",
    force: bool = False,
    trust_remote_code: bool = False,
    quiet: bool = False,
    lora_merge_cache: Path | None = None,
) -> Path:
    """Run mergekit's `run_merge` into a temporary folder beside `out`, then rename it into place.

    The candidate must already be validated. Shared tensors are cloned (`clone_tensors`) so that depth
    up-scaled models, which repeat layers, save without warnings. Randomized methods draw their masks from the
    candidate's seed, so the same candidate gives the same tensors on every run.
    """
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge

    out = Path(out)
    ensure_target_free(out, force)
    make_upstream(candidate, device, trust_remote_code, lora_merge_cache)
    options = _options(
        candidate,
        device,
        trust_remote_code,
        lora_merge_cache,
        quiet=quiet,
        out_shard_size=parse_size(shard_size),
        clone_tensors=True,
        copy_tokenizer=True,
        safe_serialization=True,
        # mergekit's card generator asks the hub about every model path, even offline; merger
        # writes the resolved config itself and its own card later.
        write_model_card=False,
    )
    config = MergeConfiguration.model_validate(candidate.merge)
    logging.getLogger("mergekit").setLevel(logging.ERROR)
    with atomic_output_dir(out, replace=force) as tmp:
        run_merge(config, str(tmp), options=options)
        write_provenance(candidate, tmp)
    return out


def make_named(
    candidate: Candidate, name: str, device: str, trust_remote_code: bool = False, lora_merge_cache: Path | None = None
) -> Path:
    """One of the named merges a candidate takes as inputs (a mergekit-multi file's documents), made once: a folder
    named by its content is complete once it exists (written beside and renamed into place). Its own named inputs
    must be made first."""
    named = next(u for u in candidate.upstream if u.name == name)
    folder = Path(named.path)
    if is_model_folder(folder):
        return folder
    config = candidate.model_copy(
        update={"merge": named.merge, "upstream": [], "params": {}, "random_seed": seed_from_id(folder.name[-10:])}
    )
    try:
        merge_to_disk(
            config,
            folder,
            device=device,
            trust_remote_code=trust_remote_code,
            quiet=True,
            lora_merge_cache=lora_merge_cache,
        )
    except FileExistsError:  # made by another process first
        pass
    return folder


def make_upstream(
    candidate: Candidate, device: str, trust_remote_code: bool = False, lora_merge_cache: Path | None = None
) -> None:
    """Every named merge a candidate takes, in order (a sweep has leased each as a unit already: then this finds
    them made)."""
    for named in candidate.upstream:
        make_named(candidate, named.name, device, trust_remote_code, lora_merge_cache)


def _options(candidate: Candidate, device: str, trust_remote_code: bool, lora_merge_cache: Path | None, **more):
    """mergekit's options for a candidate: its seed, and a LoRA merge cache (merger's own by default)."""
    from mergekit.options import MergeOptions

    return MergeOptions(
        device=resolve_device(device),
        random_seed=candidate.random_seed,
        trust_remote_code=trust_remote_code or candidate.trust_remote_code,
        lora_merge_cache=str(lora_merge_cache or cache_root() / "lora-merge"),
        **more,
    )


def write_provenance(candidate: Candidate, folder: Path) -> None:
    """Keep the recipe and the resolved candidate beside the weights, so every output says how it was made."""
    shutil.copyfile(candidate.recipe_path, folder / "merger_recipe.yaml")
    (folder / "mergekit_config.yml").write_text(yaml.safe_dump(candidate.merge, sort_keys=False), encoding="utf-8")
    (folder / "merger_candidate.json").write_text(candidate.model_dump_json(indent=2) + "\n", encoding="utf-8")


def in_memory_supported(candidate: Candidate) -> bool:
    """mergekit builds a merged vocabulary (`tokenizer_source`, `tokenizer:`) only while writing to disk."""
    return not (candidate.merge.get("tokenizer_source") or candidate.merge.get("tokenizer"))


class Merged(NamedTuple):
    model: Any
    tokenizer: Any
    digest: str | None  # tensor_digest of the merged tensors (as merge_to_disk writes them), when asked for


def merge_in_memory(
    candidate: Candidate,
    *,
    device: str = "cpu",
    trust_remote_code: bool = False,
    lora_merge_cache: Path | None = None,
    digest: bool = True,
    resident=None,
) -> Merged:
    """Merge with mergekit's planner and executor, straight into a live model: nothing written to disk.

    mergekit 0.1.5's `MergePlanner.plan_in_memory()` fails pydantic's check of `ReturnTensor.tensor_task`
    (it tries to instantiate the abstract `Task[Tensor]`). The planner's own tasks are already validated,
    so the return tasks are built with `model_construct`, which skips only that check. The steps and the seed are
    `run_merge`'s, so the tensors are bit-identical to `mergekit-yaml`'s output, randomized methods included.
    With `resident` (`resident.Resident`), the input tensors are read from memory once read (a sweep's workspace).
    """
    from accelerate import init_empty_weights
    from mergekit.architecture import get_architecture_info
    from mergekit.config import MergeConfiguration
    from mergekit.graph import Executor
    from mergekit.io.tasks import LoaderCache, ReturnTensor
    from mergekit.merge import _model_out_config
    from mergekit.plan import MergePlanner
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_utils import set_seed

    if not in_memory_supported(candidate):
        raise ValueError("vocabulary surgery (tokenizer_source / tokenizer) is only supported by merge_to_disk")
    make_upstream(candidate, device, trust_remote_code, lora_merge_cache)
    config = MergeConfiguration.model_validate(candidate.merge)
    options = _options(candidate, device, trust_remote_code, lora_merge_cache, quiet=True)
    set_seed(options.random_seed)  # as run_merge does, first
    arch = get_architecture_info(config, options)
    loader_cache = LoaderCache()
    loader_cache.setup(options=options)
    out_config = _model_out_config(config, arch, trust_remote_code=options.trust_remote_code)
    for model in config.referenced_models():  # run_merge's warm-up: LoRA inputs are merged into the cache here
        loader_cache.get(model)
    planner = MergePlanner(config, arch, options=options, out_model_config=out_config)
    planner._plan()
    targets = [
        ReturnTensor.model_construct(weight_info=w, tensor_task=t, dtype=w.force_dtype or config.out_dtype)
        for w, t in planner._tensors
    ]
    tensors = {}
    if resident is not None:
        resident.install(loader_cache, config.referenced_models())
    try:
        # kept where they are computed: on a GPU box the merged model never stages in host RAM
        executor = Executor(targets=targets, math_device=options.device, storage_device=options.device)
        for task, value in executor.run(quiet=True):
            if isinstance(task, ReturnTensor):
                tensors[task.weight_info.name] = value.contiguous()
    finally:
        if resident is not None:
            resident.uninstall(loader_cache)
    fingerprint = tensor_digest(tensors) if digest else None
    dtype = next(iter(tensors.values())).dtype
    with init_empty_weights(include_buffers=False):  # weights on `meta`: each is assigned its merged tensor below
        model = AutoModelForCausalLM.from_config(
            out_config, dtype=dtype, trust_remote_code=options.trust_remote_code, attn_implementation="sdpa"
        )
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    if (
        unexpected
        or (set(missing) - {"lm_head.weight"})
        or ("lm_head.weight" in missing and not out_config.tie_word_embeddings)
    ):
        raise RuntimeError(f"in-memory merge does not fit the model: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model = model.to(options.device).eval()
    donor = config.base_model or config.referenced_models()[0]
    tokenizer = AutoTokenizer.from_pretrained(
        donor.model.path, revision=donor.model.revision, trust_remote_code=options.trust_remote_code
    )
    return Merged(model, tokenizer, fingerprint)
