"""The work a sweep does to one candidate, as plain functions of their inputs: merge it, refine it, score it.

Each returns a typed result and never touches the journal; the driver (`run.py`) records what they return.
`refine` is also `merger dpo`: it wires the eval stage's test items into the DPO stage's contamination check.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from merger.config.dpo import DPOSettings
from merger.config.recipe import Candidate, EvalSettings
from merger.config.results import DPORun, EvalSummary, ItemRow, TaskResult
from merger.dpo.train import run_dpo
from merger.evaluate.documents import reference_texts
from merger.evaluate.evaluator import evaluate, stderr
from merger.evaluate.model import load_model
from merger.evaluate.tasks import TASKS
from merger.merge.run import merge_in_memory, merge_to_disk
from merger.sweep.plan import check_disk


def refine(
    model_dir: Path,
    settings: DPOSettings,
    out: Path,
    *,
    device: str = "auto",
    force: bool = False,
    show_progress: bool = True,
) -> DPORun:
    """DPO on `model_dir` into `out`, the preference pairs checked against the eval tasks' test items."""
    references = reference_texts(settings.against, settings.data_dir)
    return run_dpo(model_dir, settings, out, references, device=device, force=force, show_progress=show_progress)


def materialize(candidate: Candidate, target: Path, device: str, lora_merge_cache: Path | None = None) -> Path:
    """The candidate's merge, written to `target` (checked for disk space first)."""
    check_disk(candidate, target.parent)
    return merge_to_disk(candidate, target, device=device, force=True, quiet=True, lora_merge_cache=lora_merge_cache)


def refine_candidate(candidate: Candidate, merged: Path, refined: Path, device: str) -> DPORun:
    """The candidate's DPO stage: `merged` refined into `refined`, then `merged` removed."""
    run = refine(merged, candidate.dpo, refined, device=device, force=True)
    shutil.rmtree(merged, ignore_errors=True)
    return run


def live(
    candidate: Candidate, folder: Path | None, device: str, lora_merge_cache: Path | None = None, digest: bool = False
):
    """(model, tokenizer, digest): loaded from `folder` when the candidate is on disk (no digest), else merged in
    memory (with the digest of the tensors scored, when asked for)."""
    if folder is not None:
        return (*load_model(folder, device), None)
    return merge_in_memory(candidate, device=device, lora_merge_cache=lora_merge_cache, digest=digest)


def score(
    candidate: Candidate,
    folder: Path | None,
    settings: EvalSettings,
    split: str,
    limit: int | None,
    offset: int,
    device: str,
    lora_merge_cache: Path | None = None,
    digest: bool = False,
) -> tuple[EvalSummary, list[ItemRow], str | None]:
    """Items [offset, offset + limit) of the seeded order, scored; each item's headline value for selection, and
    (with `digest`) the digest of the weights scored when they were merged in memory."""
    model, tokenizer, digest = live(candidate, folder, device, lora_merge_cache, digest)
    report = evaluate(
        model,
        tokenizer,
        settings.tasks,
        limit=limit,
        offset=offset,
        seed=settings.seed,
        num_fewshot=settings.num_fewshot,
        data=settings.data_dir,
    )
    items = []
    for position, item in enumerate(report.items):
        primary = report.tasks[item.task].primary
        value = getattr(item, TASKS[item.task].item_metric.get(primary, primary))
        items.append(
            ItemRow(
                split=split, task=item.task, item=item.id, position=offset + position, value=float(value), record=item
            )
        )
    return report.summary(), items, digest


def task_result(task: str, values: list[float], num_fewshot: int) -> TaskResult:
    """A published score from per-item values, with the task's dataset facts for the card."""
    t = TASKS[task]
    return TaskResult(
        metric=t.primary,
        value=sum(values) / len(values),
        stderr=stderr(values),
        n=len(values),
        num_fewshot=num_fewshot,
        title=t.title,
        dataset=t.hub.path if t.hub else None,
        dataset_config=t.hub.name if t.hub else None,
        split=t.hub.test_split if t.hub else None,
    )
