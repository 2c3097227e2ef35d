"""Where a model gets scored: tasks in, per-task scores and per-item records out.

Works on a live in-memory model, so a sweep can score a merge without writing it to disk.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from merger.config.results import EvalReport, ItemRecord, TaskScore
from merger.core.errors import UserError
from merger.evaluate.data import data_dir, sample_indices
from merger.evaluate.generation import generate_until
from merger.evaluate.scoring import Encoder, model_max_length, score_items
from merger.evaluate.tasks import TASKS, get_task
from merger.evaluate.tasks.base import Generation, Requests

DEFAULT_SEED = 1234
CPU_TOKEN_BUDGET = 1  # one item per batch: a CPU gains nothing from batching and pays for padding
GPU_TOKEN_BUDGET = 65536


def parse_tasks(spec: str | list[str], file: str = "--tasks", field: str = "") -> list[str]:
    """Task names, each one merger can score; one line naming the first unknown one otherwise."""
    names = [t.strip() for t in (spec.split(",") if isinstance(spec, str) else spec) if t.strip()]
    unknown = [n for n in names if n not in TASKS]
    if unknown or not names:
        raise UserError.one(file, field, f"unknown task '{(unknown or [''])[0]}'; known: {', '.join(TASKS)}")
    return names


def stderr(values: list[float]) -> float:
    """lm-eval's mean_stderr: sample standard deviation over sqrt(n)."""
    n = len(values)
    if n < 2:
        return float("nan")
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) / math.sqrt(n)


def evaluate(
    model,
    tokenizer,
    tasks: list[str],
    *,
    limit: int | None = None,
    num_fewshot: int | dict[str, int] | None = None,
    seed: int = DEFAULT_SEED,
    data: str | Path | None = None,
    batch_size: int | None = None,
    show_progress: bool = True,
    offset: int = 0,
) -> EvalReport:
    """Score a loaded model on the named tasks; the same arguments give the same items for every model."""
    root = data_dir(data)
    report = EvalReport()
    device = next(model.parameters()).device
    budget = GPU_TOKEN_BUDGET if device.type == "cuda" else CPU_TOKEN_BUDGET
    encoder = Encoder(tokenizer, model_max_length(model, tokenizer))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    progress = (
        Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
        )
        if show_progress
        else None
    )
    with progress or nullcontext():
        for name in parse_tasks(tasks):
            task = get_task(name)
            test, pool = task.load(root)
            docs = [test[i] for i in sample_indices(len(test), limit, seed, offset)]
            k = num_fewshot.get(name) if isinstance(num_fewshot, dict) else num_fewshot
            if k is None:
                k = task.default_fewshot if pool else 0
            elif k > 0 and not pool:
                raise UserError.one(name, "num_fewshot", f"{k}-shot asked for, but the task has no few-shot pool")
            bar = progress.add_task(f"{name} ({k}-shot)", total=len(docs)) if progress else None

            def advance(n: int, bar=bar) -> None:
                if progress is not None:
                    progress.advance(bar, n)

            started = time.perf_counter()
            requests = [task.requests(doc, task.shots(doc, pool, k)) for doc in docs]
            per_item: list[dict[str, float]] = []
            if isinstance(requests[0], Generation):
                for doc, request in zip(docs, requests):
                    text = generate_until(model, tokenizer, request, encoder.max_length)
                    scores = task.score_generation(doc, text)
                    per_item.append(scores)
                    report.items.append(ItemRecord(task=name, id=str(doc["id"]), generation=text, **scores))
                    advance(1)
            else:
                encoded = [[encoder.pair(c, x) for c, x in r.pairs] for r in requests if isinstance(r, Requests)]
                if batch_size:
                    budget = max(len(e.inp) for item in encoded for e in item) * batch_size
                scored = score_items(model, encoded, pad_id, budget, advance)
                for doc, results in zip(docs, scored):
                    lls = [ll for ll, _ in results]
                    scores = task.score(doc, lls)
                    per_item.append(scores)
                    record = {task.item_metric.get(m, m): v for m, v in scores.items()}
                    report.items.append(ItemRecord(task=name, id=str(doc["id"]), lls=lls, **record))
            seconds = time.perf_counter() - started
            report.tasks[name] = TaskScore(
                metrics={m: sum(s[m] for s in per_item) / len(per_item) for m in task.metrics},
                stderr={m: stderr([s[m] for s in per_item]) for m in task.metrics},
                primary=task.primary,
                n=len(docs),
                num_fewshot=k,
                seconds=seconds,
                title=task.title,
                dataset=task.hub.path if task.hub else None,
                dataset_config=task.hub.name if task.hub else None,
                split=task.hub.test_split if task.hub else None,
            )
    return report


def evaluate_folder(
    model_dir: Path,
    tasks: str | list[str],
    *,
    device: str = "auto",
    json_out: Path | None = None,
    items_out: Path | None = None,
    **options,
) -> EvalReport:
    """`merger eval`: load a model folder, score it, and write the summary and items where asked."""
    from merger.evaluate.model import load_model
    from merger.evaluate.report import write_items, write_summary

    names = parse_tasks(tasks)
    model, tokenizer = load_model(model_dir, device)
    report = evaluate(model, tokenizer, names, **options)
    if json_out:
        write_summary(report, json_out)
    if items_out:
        write_items(report, items_out)
    return report
