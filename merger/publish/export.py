"""An upload-ready copy of a model folder: safetensors shards and index, tokenizer, chat template,
generation config, provenance and card; optionally pushed to the Hub."""

from __future__ import annotations

import shutil
from pathlib import Path

from merger.config.results import HISTORY, PROVENANCE, Scores
from merger.core.atomic import atomic_output_dir, ensure_target_free
from merger.core.errors import UserError
from merger.core.hf import hub_offline, parse_size, require_model_folder
from merger.publish.card import write_card
from merger.publish.eval_results import write as write_eval_results

SHORT_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}  # the flag's short names for mergekit's
CARRIED = (*PROVENANCE, HISTORY, "train_metrics.jsonl", "merger_scores.json")


def export(
    model_dir: Path,
    out: Path,
    dtype: str = "bf16",
    shard_size: str = "5GB",
    force: bool = False,
    push_to_hub: str | None = None,
    eval_results: bool = False,
) -> tuple[str | None, list[str]]:
    """`merger export`: an upload-ready copy of `model_dir` in `out` (with `eval_results`, its benchmark scores as
    Eval Results files); with `push_to_hub`, uploaded there. Returns the upload's commit URL, if any, and the scores
    left out of the Eval Results. Every refusal comes before any work."""
    from mergekit.common import dtype_from_name
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        torch_dtype = dtype_from_name(SHORT_DTYPES.get(dtype, dtype))
    except RuntimeError:
        raise UserError.one("--dtype", "", f"'{dtype}' is not one of bf16, fp16, fp32") from None
    max_shard = parse_size(shard_size)
    model_dir, out = Path(model_dir), Path(out)
    require_model_folder(model_dir)
    ensure_target_free(out, force)
    if push_to_hub:
        check_push(push_to_hub)
    scores = _scores(model_dir) if eval_results else None
    skipped: list[str] = []
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype)
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
        if scores is not None:
            skipped = write_eval_results(tmp, scores)
    return (push(out, push_to_hub) if push_to_hub else None), skipped


def _scores(model_dir: Path) -> Scores:
    path = model_dir / "merger_scores.json"
    if not path.is_file():
        raise UserError.one(str(path), "--eval-results", "no scores here: run a sweep, or `merger card --scores`")
    return Scores.model_validate_json(path.read_text())


def check_push(repo: str) -> None:
    """Refuse before any work when an upload cannot happen: offline, or no token."""
    from huggingface_hub import get_token

    if hub_offline():
        raise UserError.one("--push-to-hub", repo, "HF_HUB_OFFLINE is set; unset it to upload")
    if not get_token():
        raise UserError.one("--push-to-hub", repo, "no Hugging Face token: run `hf auth login` or set HF_TOKEN")


def push(folder: Path, repo: str) -> str:
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo, exist_ok=True)
    return api.upload_folder(folder_path=str(folder), repo_id=repo).commit_url
