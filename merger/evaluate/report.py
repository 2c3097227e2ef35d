"""How scores are shown and saved: a rich table, the JSON summary (`EvalSummary`), the per-item JSONL."""

from __future__ import annotations

import math
from pathlib import Path

from rich.table import Table

from merger.config.results import EvalReport
from merger.core.atomic import atomic_write


def results_table(report: EvalReport, title: str = "Scores") -> Table:
    table = Table(title=title)
    for column in ("task", "shots", "n", "metric", "value", "± stderr", "seconds"):
        table.add_column(column, justify="left" if column in ("task", "metric") else "right")
    for name, score in report.tasks.items():
        for i, (metric, value) in enumerate(score.metrics.items()):
            err = score.stderr.get(metric, float("nan"))
            label = f"{metric} *" if metric == score.primary else metric
            table.add_row(
                name if i == 0 else "",
                str(score.num_fewshot) if i == 0 else "",
                str(score.n) if i == 0 else "",
                label,
                f"{value:.4f}",
                "-" if math.isnan(err) else f"{err:.4f}",
                f"{score.seconds:.1f}" if i == 0 else "",
            )
    return table


def write_summary(report: EvalReport, path: Path) -> None:
    atomic_write(path, report.summary().model_dump_json(indent=2) + "\n")


def write_items(report: EvalReport, path: Path) -> None:
    lines = [item.model_dump_json(exclude_none=True) for item in report.items]
    atomic_write(path, "\n".join(lines) + "\n")
