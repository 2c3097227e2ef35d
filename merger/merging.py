"""The mergekit adapter: one candidate in, one Hugging Face folder out, atomically."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import yaml

from merger.atomic import atomic_output_dir
from merger.device import resolve_device
from merger.errors import UserError
from merger.recipe import Candidate


SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*$", re.IGNORECASE)
UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def parse_size(text: str) -> int:
    """'5GB' -> 5_000_000_000 bytes, decimal units as the Hub's `max_shard_size` uses them."""
    match = SIZE.match(text)
    if not match:
        raise UserError.one("--shard-size", "", f"'{text}' is not a size like 5GB or 500MB")
    return int(float(match.group(1)) * UNITS[match.group(2).upper()])


def ensure_target_free(out: Path, force: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise UserError.one(str(out), "--out", "exists and is not empty; pass --force to replace it")


def merge_to_disk(
    candidate: Candidate,
    out: Path,
    *,
    device: str = "cpu",
    shard_size: str = "5GB",
    force: bool = False,
    trust_remote_code: bool = False,
    quiet: bool = False,
) -> Path:
    """Run mergekit's `run_merge` into a temporary folder beside `out`, then rename it into place.

    The candidate must already be validated. Shared tensors are cloned (`clone_tensors`) so that depth
    up-scaled models, which repeat layers, save without warnings.
    """
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    out = Path(out)
    ensure_target_free(out, force)
    options = MergeOptions(
        device=resolve_device(device),
        out_shard_size=parse_size(shard_size),
        clone_tensors=True,
        copy_tokenizer=True,
        trust_remote_code=trust_remote_code or candidate.trust_remote_code,
        quiet=quiet,
        safe_serialization=True,
        # mergekit's card generator asks the hub about every model path, even offline; merger writes
        # the resolved config itself and its own card later.
        write_model_card=False,
    )
    config = MergeConfiguration.model_validate(candidate.merge)
    logging.getLogger("mergekit").setLevel(logging.ERROR)
    with atomic_output_dir(out, replace=force) as tmp:
        run_merge(config, str(tmp), options=options)
        write_provenance(candidate, tmp)
    return out


def write_provenance(candidate: Candidate, folder: Path) -> None:
    """Keep the recipe and the resolved candidate beside the weights, so every output says how it was made."""
    shutil.copyfile(candidate.recipe_path, folder / "merger_recipe.yaml")
    (folder / "mergekit_config.yml").write_text(yaml.safe_dump(candidate.merge, sort_keys=False), encoding="utf-8")
    (folder / "merger_candidate.json").write_text(
        json.dumps(candidate.model_dump(), indent=2, default=str) + "\n", encoding="utf-8"
    )
