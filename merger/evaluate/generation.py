"""Greedy generation until a stop string, as lm-eval's HFLM.generate_until does it."""

from __future__ import annotations

import torch

from merger.evaluate.tasks.base import Generation


@torch.inference_mode()
def generate_until(model, tokenizer, request: Generation, max_length: int) -> str:
    """The continuation, cut at the first stop string (the tokenizer's EOS counts as one, as in lm-eval)."""
    device = next(model.parameters()).device
    until = list(request.until)
    eos = tokenizer.decode([tokenizer.eos_token_id]) if tokenizer.eos_token_id is not None else None
    if eos and eos not in until:
        until.append(eos)
    ids = tokenizer(request.context, return_tensors="pt")["input_ids"][:, -(max_length - request.max_gen_toks) :]
    out = model.generate(
        input_ids=ids.to(device),
        attention_mask=torch.ones_like(ids).to(device),
        max_new_tokens=request.max_gen_toks,
        do_sample=False,
        stop_strings=until,
        tokenizer=tokenizer,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    text = tokenizer.decode(out[0, ids.shape[1] :])
    for term in until:
        if term:
            text = text.split(term)[0]
    return text
