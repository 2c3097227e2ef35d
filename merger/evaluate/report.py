"""How scores are shown and saved: a rich table, the JSON summary, the per-item JSONL."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from rich.table import Table

from merger.evaluate.evaluator import EvalReport


def results_table(report: EvalReport, title: str = "Scores") -> Table:
    table = Table(title=title)
    for column in ("task", "shots", "n", "metric", "value", "± stderr", "seconds"):
        table.add_column(column, justify="left" if column in ("task", "metric") else "right")
    for name, score in report.tasks.items():
        for i, (metric, value) in enumerate(score.metrics.items()):
            err = score.stderr.get(metric, float("nan"))
            label = f"{metric} *" if metric == score.primary else metric
            table.add_row(name if i == 0 else "", str(score.num_fewshot) if i == 0 else "",
                          str(score.n) if i == 0 else "", label, f"{value:.4f}",
                          "-" if math.isnan(err) else f"{err:.4f}", f"{score.seconds:.1f}" if i == 0 else "")
    return table


def _atomic_write(path: Path, text: str) -> None:
    """Write beside the target and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_summary(report: EvalReport, path: Path) -> None:
    _atomic_write(path, json.dumps(report.summary(), indent=2) + "\n")


def write_items(report: EvalReport, path: Path) -> None:
    lines = [item.model_dump_json(exclude_none=True) for item in report.items]
    _atomic_write(path, "\n".join(lines) + "\n")
