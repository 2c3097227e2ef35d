"""Log-likelihood scoring with the context computed once per item.

lm-eval runs every choice through the whole context (4 x 1,800 tokens for 25-shot ARC). Here the tokens
that all of an item's requests share are run once, their KV cache is copied to each choice, and only the
few tokens after it are run per choice. Tokenization follows lm-eval's HFLM exactly, so the numbers are
the same to float precision:
- trailing whitespace of the context moves to the continuation;
- the pair is encoded whole and the continuation is what follows the context's own encoding;
- the model sees `(context + continuation)[-(max_length + 1):][:-1]`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Encoded:
    """One (context, continuation) request as the model sees it."""

    inp: list[int]  # tokens fed to the model
    cont: list[int]  # continuation tokens to score
    ctx_len: int  # len(inp) - len(cont) + 1: logits from position ctx_len - 1 onwards score cont


class Encoder:
    """lm-eval's HFLM tokenization, for a tokenizer and a model's maximum length."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.prefix_token_id = prefix
        self.prefix_text = tokenizer.decode(prefix)

    def encode(self, text: str) -> list[int]:
        # HFLM.tok_encode: the tokenizer's own special-token default, unless the text already starts with BOS.
        if self.prefix_text and text.startswith(self.prefix_text):
            return self.tokenizer.encode(text, add_special_tokens=False)
        return self.tokenizer.encode(text)

    def pair(self, context: str, continuation: str) -> Encoded:
        if context == "":
            cont = self.tokenizer.encode(continuation, add_special_tokens=False)
            ctx, cont = ([self.prefix_token_id], cont) if self.prefix_token_id != cont[0] else (cont[:1], cont[1:])
        else:
            n_spaces = len(context) - len(context.rstrip())
            if n_spaces:
                continuation = context[-n_spaces:] + continuation
                context = context[:-n_spaces]
            whole = self.encode(context + continuation)
            ctx = self.encode(context)
            cont = whole[len(ctx) :]
        inp = (ctx + cont)[-(self.max_length + 1) :][:-1]
        return Encoded(inp=inp, cont=cont, ctx_len=len(inp) - len(cont) + 1)


def model_max_length(model, tokenizer) -> int:
    """lm-eval's resolution order: model config fields, then the tokenizer, else 2048."""
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(model.config, attr, None)
        if value:
            return int(value)
    limit = getattr(tokenizer, "model_max_length", None)
    if limit and limit < 1e9:
        return int(limit)
    return 2048


def shared_prefix(requests: list[Encoded]) -> int:
    """Tokens every request starts with, but never past any context (its last logit scores the first token)."""
    first = requests[0].inp
    limit = min(r.ctx_len for r in requests)
    n = 0
    while n < limit and all(len(r.inp) > n and r.inp[n] == first[n] for r in requests):
        n += 1
    return n


def _pad(rows: list[list[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


@torch.inference_mode()
def score_group(model, items: list[list[Encoded]], pad_id: int) -> list[list[tuple[float, bool]]]:
    """Score a batch of items; each item is a list of requests that may share a prefix.

    One forward over the right-padded prefixes gives each item's KV cache and the logit at its last
    prefix position; one forward over every request's remaining tokens, on a copy of its item's cache,
    gives the rest. Padding is masked, and positions continue from each item's own prefix length.
    """
    device = next(model.parameters()).device
    prefixes = [shared_prefix(reqs) for reqs in items]
    prefix_ids, prefix_mask = _pad([reqs[0].inp[:p] for reqs, p in zip(items, prefixes)], pad_id)
    last = torch.tensor(prefixes, dtype=torch.long).unsqueeze(1) - 1
    out = model(
        input_ids=prefix_ids.to(device),
        attention_mask=prefix_mask.to(device),
        use_cache=True,
        logits_to_keep=last.to(device),
    )
    prefix_logits = out.logits[:, 0, :].float().log_softmax(-1)  # [items, vocab]
    cache = out.past_key_values

    rows = [(i, r) for i, reqs in enumerate(items) for r in reqs]
    suffixes = [r.inp[prefixes[i] :] for i, r in rows]
    suffix_logits = None
    if any(suffixes):
        owner = torch.tensor([i for i, _ in rows], device=device)
        cache.reorder_cache(owner)  # one copy of its item's prefix cache per request
        suffix_ids, suffix_mask = _pad([s or [pad_id] for s in suffixes], pad_id)
        for j, s in enumerate(suffixes):
            suffix_mask[j, : max(len(s), 1)] = 1
        positions = torch.tensor([prefixes[i] for i, _ in rows]).unsqueeze(1) + torch.arange(suffix_ids.shape[1])
        mask = torch.cat([prefix_mask[owner.cpu()], suffix_mask], dim=1)
        suffix_logits = model(
            input_ids=suffix_ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            past_key_values=cache,
        ).logits

    results: list[list[tuple[float, bool]]] = [[] for _ in items]
    for j, (i, r) in enumerate(rows):
        p = prefixes[i]
        # Logits predicting cont tokens sit at input positions ctx_len - 1 .. len(inp) - 1.
        start = r.ctx_len - 1
        parts = []
        if start == p - 1:
            parts.append(prefix_logits[i : i + 1])
            start = p
        n_rest = len(r.inp) - start
        if n_rest > 0:
            parts.append(suffix_logits[j, start - p : start - p + n_rest].float().log_softmax(-1))
        logprobs = torch.cat(parts, dim=0)
        target = torch.tensor(r.cont, device=logprobs.device)
        ll = logprobs.gather(1, target.unsqueeze(1)).sum().item()
        greedy = bool((logprobs.argmax(-1) == target).all())
        results[i].append((ll, greedy))
    return results


def batches(items: list[list[Encoded]], token_budget: int) -> list[list[int]]:
    """Indices of items, longest first, grouped so each batch's padded prefixes fit `token_budget` tokens.

    Sorting by length keeps padding small; the budget bounds memory on any device.
    """
    lengths = [max(len(r.inp) for r in reqs) for reqs in items]
    groups: list[list[int]] = []
    for index in sorted(range(len(items)), key=lambda i: -lengths[i]):
        # Sorted longest first, so a batch's first item sets its padded width.
        if groups and lengths[groups[-1][0]] * (len(groups[-1]) + 1) <= token_budget:
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


def score_items(
    model, items: list[list[Encoded]], pad_id: int, token_budget: int, advance: Callable[[int], None] = lambda n: None
) -> list[list[tuple[float, bool]]]:
    """(log-likelihood, is_greedy) per request per item, in the items' order."""
    results: list[list[tuple[float, bool]] | None] = [None] * len(items)
    for group in batches(items, token_budget):
        for index, scored in zip(group, score_group(model, [items[i] for i in group], pad_id)):
            results[index] = scored
        advance(len(group))
    return results  # type: ignore[return-value]
