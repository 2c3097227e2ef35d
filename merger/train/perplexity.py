"""Held-out perplexity: exp of the mean cross-entropy over every predicted token of the first N texts of a
{"text"} JSONL file, each cut to max_length tokens. The same texts, cut the same way, for every model compared."""

from __future__ import annotations

import math

from merger.core.errors import UserError
from merger.train.data import read_rows


def heldout_texts(path: str, count: int) -> list[str]:
    """The first `count` texts of a {"text"} JSONL file (or hub dataset), each checked to be a string."""
    rows = read_rows(path, ("text",), "held-out text", field="heldout")[:count]
    for number, row in enumerate(rows, 1):
        if not isinstance(row.get("text"), str):
            raise UserError.one(path, f"row {number}", 'each row must be {"text": "..."}')
    return [row["text"] for row in rows]


def perplexity(model, tokenizer, texts: list[str], max_length: int) -> tuple[float, int]:
    """(perplexity, tokens predicted) of `model` on `texts`."""
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"].to(device)
            if ids.shape[1] < 2:
                continue
            logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()
            total += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
            tokens += ids.shape[1] - 1
    model.train(was_training)
    return math.exp(total / max(tokens, 1)), tokens
