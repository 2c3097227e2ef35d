"""Reading training data: a local JSONL file or a hub dataset, its rows counted as they are checked."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from merger.config.results import Decontamination, TrainData
from merger.core.errors import UserError


@dataclass
class RowReport:
    """What validation found; dropped rows are counted by reason so the output can state them."""

    read: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    truncated: int = 0

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


def read_rows(source: str, columns: tuple[str, ...], what: str, field: str = "--data") -> list[dict[str, Any]]:
    """A local JSONL file, or a hub dataset id (its train split); its first row must have one of `columns` (each
    entry a column, or several joined by '+'). `field` names the setting the source came from, for errors."""
    path = Path(source)
    if path.suffix in (".jsonl", ".json") or path.exists():
        if not path.is_file():
            raise UserError.one(source, field, f"no such {what} file")
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError.one(source, f"line {number}", f"not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise UserError.one(source, f"line {number}", "each line must be a JSON object")
            rows.append(row)
    else:
        import datasets

        try:
            rows = [dict(r) for r in datasets.load_dataset(source, split="train")]
        except Exception as exc:  # datasets raises many types, all meaning 'not available here'
            raise UserError.one(
                source, field, f"not a local file, and the hub dataset could not be loaded ({str(exc).splitlines()[0]})"
            ) from None
    if not rows:
        raise UserError.one(source, field, f"holds no {what}")
    if not any(all(c in rows[0] for c in option.split("+")) for option in columns):
        wanted = " or ".join(", ".join(option.split("+")) for option in columns)
        raise UserError.one(source, "columns", f"has {', '.join(rows[0]) or 'none'}; {what} needs {wanted}")
    return rows


def fingerprint(rows: list[dict[str, Any]]) -> str:
    """Identifies the exact data a model was trained on, for the model card and for resuming."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()[:16]


def messages(value: Any, role: str) -> list[dict[str, str]] | None:
    """A string as one message of `role`, or a list of chat messages as given; None for anything else."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in value]
    return None


def summary(
    source: str, rows: list[dict[str, Any]], report: RowReport, contamination: Decontamination, examples: list[dict]
) -> TrainData:
    """What was read and kept, once the rows are checked; one line when nothing is left to train on."""
    if contamination.dropped:
        report.dropped["contaminated"] = contamination.dropped
    if not report.kept:
        raise UserError.one(source, "--data", f"no usable rows left (dropped: {report.dropped})")
    return TrainData(
        source=source,
        fingerprint=fingerprint(rows),
        rows_read=report.read,
        rows_used=report.kept,
        dropped=report.dropped,
        truncated=report.truncated,
        contamination_examples=examples,
    )
