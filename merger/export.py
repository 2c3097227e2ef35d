"""An upload-ready copy of a model folder: safetensors shards and index, tokenizer, chat template,
generation config, provenance and card; optionally pushed to the Hub."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from merger.atomic import atomic_output_dir
from merger.errors import UserError

DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16", "fp32": "float32",
          "float32": "float32"}
CARRIED = ("mergekit_config.yml", "merger_recipe.yaml", "merger_candidate.json", "merger_dpo.json",
           "dpo_metrics.jsonl", "merger_scores.json")


def export(model_dir: Path, out: Path, dtype: str = "bf16", shard_size: str = "5GB", force: bool = False) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from merger.card import write_card
    from merger.merging import ensure_target_free, parse_size

    if dtype not in DTYPES:
        raise UserError.one("--dtype", "", f"'{dtype}' is not one of bf16, fp16, fp32")
    max_shard = parse_size(shard_size)
    model_dir, out = Path(model_dir), Path(out)
    if not (model_dir / "config.json").exists():
        raise UserError.one(str(model_dir), "config.json", "missing: not a Hugging Face model folder")
    if not list(model_dir.glob("*.safetensors")):
        raise UserError.one(str(model_dir), "*.safetensors", "no safetensors weights to export")
    ensure_target_free(out, force)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, DTYPES[dtype]))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with atomic_output_dir(out, replace=force) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, max_shard_size=max_shard)
        tokenizer.save_pretrained(tmp)
        for name in CARRIED:
            if (model_dir / name).exists():
                shutil.copyfile(model_dir / name, tmp / name)
        if (model_dir / "mergekit_config.yml").exists():
            write_card(tmp, name=out.name)
        elif (model_dir / "README.md").exists():
            shutil.copyfile(model_dir / "README.md", tmp / "README.md")
    return out


def check_push(repo: str) -> None:
    """Refuse before any work when an upload cannot happen: offline, or no token."""
    from huggingface_hub import get_token

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise UserError.one("--push-to-hub", repo, "HF_HUB_OFFLINE is set; unset it to upload")
    if not get_token():
        raise UserError.one("--push-to-hub", repo, "no Hugging Face token: run `hf auth login` or set HF_TOKEN")


def push(folder: Path, repo: str) -> str:
    from huggingface_hub import HfApi

    check_push(repo)
    api = HfApi()
    api.create_repo(repo, exist_ok=True)
    return api.upload_folder(folder_path=str(folder), repo_id=repo).commit_url
