"""Preference pairs for DPO: loading, normalising to chat messages, and checking them before any training.

Rows may give `prompt`, `chosen` and `rejected` as strings or as chat message lists, with an optional
`system`. Every pair becomes trl's conversational form (prompt messages, one assistant message each for
chosen and rejected), so trl renders it with the model's own chat template.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from merger.core.errors import UserError
from merger.train.data import RowReport, messages

COLUMNS = ("prompt", "chosen", "rejected")


@dataclass
class Pair:
    prompt: list[dict[str, str]]
    chosen: list[dict[str, str]]
    rejected: list[dict[str, str]]

    def as_row(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}

    def text(self) -> str:
        """All the words of the pair, for contamination checks."""
        return " ".join(m["content"] for m in self.prompt + self.chosen + self.rejected)


def _completion(value: Any) -> list[dict[str, str]] | None:
    """A completion is the last assistant turn: a string, or a message list ending with one."""
    turns = messages(value, "assistant")
    if not turns or turns[-1]["role"] != "assistant":
        return None
    return turns[-1:]


def normalize(rows: list[dict[str, Any]], source: str) -> tuple[list[Pair], RowReport]:
    report = RowReport(read=len(rows))
    pairs = []
    for number, row in enumerate(rows, 1):
        prompt = messages(row.get("prompt"), "user")
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
            pairs.append(Pair(prompt, chosen, rejected))
    return pairs, report


def enforce_length(pairs: list[Pair], tokenizer, max_length: int, overlong: str, report: RowReport) -> list[Pair]:
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
