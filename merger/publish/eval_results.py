"""Hugging Face Eval Results files (`.eval_results/<benchmark>.yaml`): only for scores measured with the benchmark's
own protocol (a preset's shots and metric) on every item of its test split, never for a quick subset, and never
for the items a sweep selected the model on (those are biased upwards)."""

from __future__ import annotations

import datetime
from pathlib import Path

import yaml

from merger.config.results import EvalResult, EvalResultDataset, EvalResultSource, Scores, TaskResult
from merger.core.atomic import atomic_write


def why_not(task: str, r: TaskResult, scores: Scores) -> str | None:
    """Why this score is not a benchmark score, or None when it is one."""
    if r.protocol is None:
        return f"{task}: not scored with a preset's protocol (shots, metric)"
    if r.n_total is None or r.n < r.n_total:
        return f"{task}: a quick subset ({r.n} of {r.n_total} items), not the whole test split"
    if scores.items == "select":
        return f"{task}: measured on the items the model was selected on"
    if not r.dataset:
        return f"{task}: no hub dataset to file it under"
    return None


def entries(scores: Scores, date: str | None = None) -> tuple[dict[str, list[EvalResult]], list[str]]:
    """(file name -> its entries, reasons for the scores left out)."""
    date = date or datetime.date.today().isoformat()
    files, skipped = {}, []
    for task, r in scores.tasks.items():
        reason = why_not(task, r, scores)
        if reason:
            skipped.append(reason)
            continue
        notes = [f"lm-evaluation-harness task {task}, {r.num_fewshot}-shot, {r.metric}"]
        if r.data and r.data != "hub":
            notes.append("items read from a local copy of the dataset")
        files[f"{task}.yaml"] = [
            EvalResult(
                dataset=EvalResultDataset(id=r.dataset, task_id=task),
                value=round(r.value * 100, 2),
                date=date,
                source=EvalResultSource(name="merger (lm-evaluation-harness tasks)"),
                notes="; ".join(notes),
            )
        ]
    return files, skipped


def write(folder: Path, scores: Scores) -> list[str]:
    """Write `folder/.eval_results/*.yaml`; returns the reasons for scores left out."""
    files, skipped = entries(scores)
    for name, results in files.items():
        data = [r.model_dump(exclude_none=True) for r in results]
        atomic_write(Path(folder) / ".eval_results" / name, yaml.safe_dump(data, sort_keys=False))
    return skipped
