"""Log-likelihood scoring with the context computed once per item.

lm-eval runs every choice through the whole context (4 x 1,800 tokens for 25-shot ARC). Here the tokens
that all of an item's requests share are run once, in the same forward pass as every choice's own few
tokens (packed after them, with a tree attention mask). Tokenization follows lm-eval's HFLM exactly, so the
numbers are the same to float precision:
- trailing whitespace of the context moves to the continuation;
- the pair is encoded whole and the continuation is what follows the context's own encoding;
- the model sees `(context + continuation)[-(max_length + 1):][:-1]`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from merger.core.device import release
from merger.core.errors import UserError


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
        self.pairs: dict[tuple[str, str], Encoded] = {}  # each request tokenized once, for every model sharing it

    def fits(self, tokenizer, max_length: int) -> bool:
        """Whether this encoder tokenizes as a new one for `tokenizer` and `max_length` would (a sweep's siblings
        share their donor's tokenizer, read from the same folder)."""
        return (
            self.max_length == max_length
            and tokenizer.name_or_path == self.tokenizer.name_or_path
            and len(tokenizer) == len(self.tokenizer)
            and tokenizer.bos_token_id == self.tokenizer.bos_token_id
            and tokenizer.eos_token_id == self.tokenizer.eos_token_id
        )

    def encode(self, text: str) -> list[int]:
        # HFLM.tok_encode: the tokenizer's own special-token default, unless the text already starts with BOS.
        if self.prefix_text and text.startswith(self.prefix_text):
            return self.tokenizer.encode(text, add_special_tokens=False)
        return self.tokenizer.encode(text)

    def pair(self, context: str, continuation: str) -> Encoded:
        key = (context, continuation)
        found = self.pairs.get(key)
        if found is None:
            found = self.pairs[key] = self._pair(context, continuation)
        return found

    def _pair(self, context: str, continuation: str) -> Encoded:
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


def _tree(items: list[list[Encoded]], prefixes: list[int], pad_id: int, dtype: torch.dtype, device):
    """Each item as one row: its shared prefix, then every request's remaining tokens end to end. The additive 4-D
    mask lets the prefix see itself causally and each request's tokens see the prefix and themselves causally;
    positions continue from the prefix in every request. Returns ids, positions, mask, and where each request's
    remaining tokens start in its row."""
    rows, starts = [], []
    for reqs, p in zip(items, prefixes):
        row, begins = list(reqs[0].inp[:p]), []
        for r in reqs:
            begins.append(len(row))
            row += r.inp[p:]
        rows.append(row)
        starts.append(begins)
    width = max(len(row) for row in rows)
    if torch.device(device).type == "cuda":
        width = -(-width // 8) * 8  # a multiple of 8: tensor cores' tile
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(items), width), dtype=torch.long)
    allowed = torch.zeros((len(items), width, width), dtype=torch.bool, device=device)  # built where it is used
    for i, (reqs, p) in enumerate(zip(items, prefixes)):
        ids[i, : len(rows[i])] = torch.tensor(rows[i], dtype=torch.long)
        allowed[i, len(rows[i]) :, 0] = True  # padding sees one token, so no row of the softmax is empty
        positions[i, :p] = torch.arange(p)
        allowed[i, :p, :p] = torch.ones(p, p, dtype=torch.bool, device=device).tril()
        for r, a in zip(reqs, starts[i]):
            n = len(r.inp) - p
            positions[i, a : a + n] = torch.arange(p, p + n)
            allowed[i, a : a + n, :p] = True
            allowed[i, a : a + n, a : a + n] = torch.ones(n, n, dtype=torch.bool, device=device).tril()
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
    return ids, positions, mask.unsqueeze(1), starts


@torch.inference_mode()
def score_group(model, items: list[list[Encoded]], prefixes: list[int], pad_id: int) -> list[list[tuple[float, bool]]]:
    """Score a batch of items; each item is a list of requests that may share a prefix (`prefixes`: how many
    tokens each item's requests share, `shared_prefix`; 0 packs them with nothing shared).

    One forward pass per batch: each item's shared prefix runs once, with every request's remaining tokens packed
    after it in the same row (a tree attention mask, no padding between requests, no copied cache), and logits are
    computed only at the positions that score a continuation token.
    """
    if model.config._attn_implementation not in ("sdpa", "eager"):
        raise ValueError(f"scoring needs sdpa or eager attention (a 4-D mask), not {model.config._attn_implementation}")
    device = next(model.parameters()).device
    ids, positions, mask, starts = _tree(items, prefixes, pad_id, next(model.parameters()).dtype, device)
    # Logits predicting cont tokens sit at input positions ctx_len - 1 .. len(inp) - 1: the last prefix position,
    # then the request's own tokens.
    wanted = [
        [
            [p - 1 if at == p - 1 else a + at - p for at in range(r.ctx_len - 1, len(r.inp))]
            for r, a in zip(reqs, begins)
        ]
        for reqs, p, begins in zip(items, prefixes, starts)
    ]
    # Exactly each row's wanted positions (a 2-D boolean mask): logits come back flattened, row by row.
    keep = torch.zeros(ids.shape, dtype=torch.bool)
    for i, per_item in enumerate(wanted):
        keep[i, [x for per_request in per_item for x in per_request]] = True
    column, k = {}, 0
    for i, x in keep.nonzero().tolist():
        column[i, x], k = k, k + 1
    logits = model(
        input_ids=ids.to(device),
        attention_mask=mask,
        position_ids=positions.to(device),
        use_cache=False,
        logits_to_keep=keep.to(device),
    ).logits
    results: list[list[tuple[float, bool]]] = []
    for i, (reqs, per_item) in enumerate(zip(items, wanted)):
        results.append([])
        for r, per_request in zip(reqs, per_item):
            logprobs = logits[[column[i, x] for x in per_request]].float().log_softmax(-1)
            target = torch.tensor(r.cont, device=logprobs.device)
            ll = logprobs.gather(1, target.unsqueeze(1)).sum().item()
            results[i].append((ll, bool((logprobs.argmax(-1) == target).all())))
    return results


def batches(items: list[list[Encoded]], prefixes: list[int], token_budget: int) -> list[list[int]]:
    """Indices of items, longest first, grouped so each batch's padded rows (shared prefix, then every request's
    own tokens) fit `token_budget` tokens.

    Sorting by length keeps padding small; the budget bounds memory on any device.
    """
    lengths = [p + sum(len(r.inp) - p for r in reqs) for reqs, p in zip(items, prefixes)]
    groups: list[list[int]] = []
    for index in sorted(range(len(items)), key=lambda i: -lengths[i]):
        # Sorted longest first, so a batch's first item sets its padded width.
        if groups and lengths[groups[-1][0]] * (len(groups[-1]) + 1) <= token_budget:
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


def out_of_memory(what: str, knob: str) -> UserError:
    """One line for work that does not fit even alone: how much memory there was, and what to turn."""
    free, total = torch.cuda.mem_get_info() if torch.cuda.is_available() else (0, 0)
    return UserError.one(
        "memory",
        "",
        f"{what} does not fit on the GPU even alone ({free / 2**30:.1f} of {total / 2**30:.1f} GiB free); {knob}",
    )


def score_items(
    model, items: list[list[Encoded]], pad_id: int, token_budget: int, advance: Callable[[int], None] = lambda n: None
) -> list[list[tuple[float, bool]]]:
    """(log-likelihood, is_greedy) per request per item, in the items' order. A batch that runs out of GPU memory
    is halved and retried (as lm-eval's `auto` batch size backs off); an item that does not fit alone is one line."""
    results: list[list[tuple[float, bool]] | None] = [None] * len(items)
    prefixes = [shared_prefix(reqs) for reqs in items]
    todo = batches(items, prefixes, token_budget)
    while todo:
        group = todo.pop(0)
        try:
            scored_group = score_group(model, [items[i] for i in group], [prefixes[i] for i in group], pad_id)
        except torch.OutOfMemoryError:
            release()
            if len(group) == 1:
                width = prefixes[group[0]] + sum(len(r.inp) - prefixes[group[0]] for r in items[group[0]])
                raise out_of_memory(
                    f"one item of {width} tokens", "use fewer shots, a smaller model, or a GPU with more memory"
                ) from None
            todo[:0] = [group[: len(group) // 2], group[len(group) // 2 :]]
            continue
        for index, scored in zip(group, scored_group):
            results[index] = scored
        advance(len(group))
    return results  # type: ignore[return-value]


@dataclass(frozen=True)
class Shape:
    """What a model's memory use per token depends on, and the GPU memory free for it."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    element: int  # bytes per weight and activation
    free: int  # bytes free on the model's GPU

    @classmethod
    def of(cls, model) -> Shape:
        config = model.get_text_config() if hasattr(model, "get_text_config") else model.config
        heads = config.num_attention_heads
        parameter = next(model.parameters())
        return cls(
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            intermediate=getattr(config, "intermediate_size", None) or 4 * config.hidden_size,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            element=parameter.element_size(),
            free=torch.cuda.mem_get_info(parameter.device)[0],
        )


def token_budget(model, width: int, ceiling: int) -> int:
    """Tokens per batch that fit the GPU's free memory: per token, one layer's activations (the residual stream,
    attention projections and the MLP) and the tree mask and attention scores of its row (width x (2 + 4 x heads)
    bytes: SDPA's kernels for arbitrary masks may materialize them). Over-estimates are halved away."""
    s = Shape.of(model)
    activations = s.element * (4 * s.hidden + 3 * s.intermediate + 2 * s.kv_heads * s.head_dim)
    per_token = activations + width * (2 + 4 * s.heads)
    return max(width, min(ceiling, int(0.6 * s.free / per_token)))
