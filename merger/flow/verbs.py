"""The library calls behind `merger merge`, `merger train`/`dpo` and a sweep's merge and training steps."""

from __future__ import annotations

from pathlib import Path

from merger.config.recipe import Candidate
from merger.config.results import TrainRun
from merger.config.train import TrainSettings
from merger.core.atomic import ensure_target_free
from merger.core.device import resolve_device
from merger.core.errors import UserError
from merger.core.hf import parse_size
from merger.evaluate.documents import reference_texts
from merger.flow.checks import check_disk, require_valid
from merger.flow.options import RunOptions
from merger.merge.run import merge_to_disk


def merge_one(
    recipe: Path, out: Path, options: RunOptions, candidate: str | None = None, shard_size: str = "5GB", force=False
) -> Candidate:
    """`merger merge`: check the recipe, pick its one candidate, merge it to `out` atomically."""
    parse_size(shard_size)  # cheap argument checks first, so a typo costs nothing
    resolve_device(options.device)
    ensure_target_free(out, force)
    candidates = require_valid(
        [str(recipe)], options.allow_pickle, options.trust_remote_code, options.strict, options.random_seed
    )
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
        device=options.device,
        shard_size=shard_size,
        force=force,
        trust_remote_code=options.trust_remote_code,
        lora_merge_cache=options.lora_merge_cache,
    )
    return chosen[0]


def materialize(candidate: Candidate, target: Path, options: RunOptions) -> Path:
    """The candidate's merge, written to `target` (checked for disk space first)."""
    check_disk(candidate, target.parent)
    return merge_to_disk(
        candidate,
        target,
        device=options.device,
        force=True,
        quiet=True,
        trust_remote_code=options.trust_remote_code,
        lora_merge_cache=options.lora_merge_cache,
    )


def train_model(
    model_dir: Path,
    kind: str | None,
    settings: TrainSettings,
    out: Path,
    *,
    device: str = "auto",
    force: bool = False,
    show_progress: bool = True,
) -> TrainRun:
    """Train `model_dir` into `out` (`kind`: pretrain, sft or dpo; None: pretrain or sft, as the data is plain text
    or chat), the rows checked against the eval tasks' items. trl and peft are imported here, on first use."""
    from merger.train.run import train
    from merger.train.sft import kind_of

    kind = kind or kind_of(settings.data)
    references = reference_texts(settings.against, settings.data_dir, settings.include_path)
    return train(model_dir, kind, settings, out, references, device=device, force=force, show_progress=show_progress)
