"""Preference pairs for DPO: loading, normalising to chat messages, and checking them before any training.

Rows may give `prompt`, `chosen` and `rejected` as strings or as chat message lists, with an optional
`system`. Every pair becomes trl's conversational form (prompt messages, one assistant message each for
chosen and rejected), so trl renders it with the model's own chat template.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from merger.core.errors import UserError

COLUMNS = ("prompt", "chosen", "rejected")


@dataclass
class Pair:
    prompt: list[dict[str, str]]
    chosen: list[dict[str, str]]
    rejected: list[dict[str, str]]
    source_row: int

    def as_row(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}

    def text(self) -> str:
        """All the words of the pair, for contamination checks."""
        return " ".join(m["content"] for m in self.prompt + self.chosen + self.rejected)


@dataclass
class PairReport:
    """What validation found; dropped pairs are counted by reason so the output can state them."""

    read: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    truncated: int = 0

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


def read_rows(source: str) -> list[dict[str, Any]]:
    """A local JSONL file, or a hub dataset id (its train split)."""
    path = Path(source)
    if path.suffix in (".jsonl", ".json") or path.exists():
        if not path.is_file():
            raise UserError.one(source, "--data", "no such preference file")
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
                source,
                "--data",
                f"not a local file, and the hub dataset could not be loaded ({str(exc).splitlines()[0]})",
            ) from None
    if not rows:
        raise UserError.one(source, "--data", "holds no preference pairs")
    missing = [c for c in COLUMNS if c not in rows[0]]
    if missing:
        raise UserError.one(source, "columns", f"missing {', '.join(missing)} (needs prompt, chosen, rejected)")
    return rows


def fingerprint(rows: list[dict[str, Any]]) -> str:
    """Identifies the exact data a model was trained on, for the model card and for resuming."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()[:16]


def _messages(value: Any, role: str) -> list[dict[str, str]] | None:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in value]
    return None


def _completion(value: Any) -> list[dict[str, str]] | None:
    """A completion is the last assistant turn: a string, or a message list ending with one."""
    messages = _messages(value, "assistant")
    if not messages or messages[-1]["role"] != "assistant":
        return None
    return messages[-1:]


def normalize(rows: list[dict[str, Any]], source: str) -> tuple[list[Pair], PairReport]:
    report = PairReport(read=len(rows))
    pairs = []
    for number, row in enumerate(rows, 1):
        prompt = _messages(row.get("prompt"), "user")
        chosen, rejected = _completion(row.get("chosen")), _completion(row.get("rejected"))
        if prompt is None or chosen is None or rejected is None:
            raise UserError.one(
                source,
                f"row {number}",
                "prompt, chosen and rejected must be strings or chat "
                "message lists (chosen and rejected ending with an assistant message)",
            )
        system = row.get("system")
        if system and prompt[0]["role"] != "system":
            prompt = [{"role": "system", "content": str(system)}] + prompt
        if not any(m["content"].strip() for m in prompt if m["role"] != "system"):
            report.drop("empty prompt")
        elif not chosen[0]["content"].strip() or not rejected[0]["content"].strip():
            report.drop("empty chosen or rejected")
        elif chosen[0]["content"].strip() == rejected[0]["content"].strip():
            report.drop("chosen identical to rejected")
        else:
            pairs.append(Pair(prompt, chosen, rejected, number))
    return pairs, report


def enforce_length(pairs: list[Pair], tokenizer, max_length: int, overlong: str, report: PairReport) -> list[Pair]:
    """Pairs whose prompt + completion exceeds max_length tokens are dropped, or kept for trl to truncate."""
    kept = []
    for pair in pairs:
        longest = max(
            len(tokenizer.apply_chat_template(pair.prompt + completion, tokenize=True, return_dict=True)["input_ids"])
            for completion in (pair.chosen, pair.rejected)
        )
        if longest <= max_length:
            kept.append(pair)
        elif overlong == "truncate":
            report.truncated += 1
            kept.append(pair)
        else:
            report.drop(f"longer than max_length {max_length}")
    return kept
