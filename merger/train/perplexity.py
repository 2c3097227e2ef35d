"""Held-out perplexity: exp of the mean cross-entropy over every predicted token of the first N texts of a
{"text"} JSONL file, each cut to max_length tokens. The same texts, cut the same way, for every model compared."""

from __future__ import annotations

import json
import math
from pathlib import Path

from merger.core.errors import UserError


def heldout_texts(path: str, count: int) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise UserError.one(path, "heldout", "no such held-out text file")
    texts = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError.one(path, f"line {number}", f"not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise UserError.one(path, f"line {number}", 'each line must be {"text": "..."}')
        texts.append(row["text"])
        if len(texts) == count:
            break
    if not texts:
        raise UserError.one(path, "heldout", "holds no texts")
    return texts


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
