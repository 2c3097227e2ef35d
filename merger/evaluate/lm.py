"""merger's scorer as an lm-eval model, registered as `merger`: lm-eval builds the requests (tasks, prompts,
few-shot samples) and scores the answers (filters, metrics, aggregation); this class only runs the model.

- `loglikelihood`: requests grouped by (task, document); each group's shared prefix (the few-shot context) runs once,
  in one forward pass with every choice's own tokens (`scoring.py`); length-sorted batches within a token budget on
  a GPU.
- `loglikelihood_rolling`: lm-eval's rolling windows, each window one scored request.
- `generate_until`: greedy generation in length-sorted, left-padded batches, with lm-eval's own stop criteria,
  generation arguments and post-processing, so generations are those of lm-eval's `hf` model. On a GPU each batch
  holds as many rows as the free memory takes at their own lengths (`generation_rows`), and models transformers
  can compile decode with a static KV cache (compiled by transformers on CUDA); others keep the dynamic cache.

It wraps a live transformers model (`MergerLM(model=..., tokenizer=...)`, how a sweep scores an in-memory merge) or
a folder (`pretrained=DIR`, as in `lm_eval --model merger --model_args pretrained=DIR`; see `harness.py`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from lm_eval import utils as lm_utils
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import (
    Collator,
    configure_pad_token,
    handle_stop_sequences,
    normalize_gen_kwargs,
    postprocess_generated_text,
)
from lm_eval.models.utils_hf import stop_sequences_criteria

from merger.core.device import release
from merger.evaluate.scoring import Encoded, Encoder, Shape, model_max_length, out_of_memory, score_items, token_budget

CPU_TOKEN_BUDGET = 1  # one item per batch: a CPU gains nothing from batching and pays for padding
GPU_TOKEN_BUDGET = 65536
CPU_GENERATE_BATCH = 1  # measured fastest on the CPU (scripts/bench_eval.py)
GENERATE_MEMORY_SHARE = 0.9  # of the free GPU memory one generation batch may fill; OOM halving catches the rest


@register_model("merger")
class MergerLM(LM):
    def __init__(
        self,
        pretrained: str | None = None,
        model=None,
        tokenizer=None,
        device: str | None = "auto",
        batch_size: int | str | None = None,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        encoders: list[Encoder] | None = None,
        **_ignored,
    ) -> None:
        super().__init__()
        if model is None:
            from merger.evaluate.model import load_model

            if pretrained is None:
                raise ValueError("merger: give pretrained=DIR (a model folder) or a loaded model")
            model, tokenizer = load_model(pretrained, device or "auto")
        self.model, self.tokenizer = model.eval(), configure_pad_token(tokenizer, model_config=model.config)
        self.max_length = int(max_length) if max_length else model_max_length(model, tokenizer)
        found = next((e for e in encoders or [] if e.fits(self.tokenizer, self.max_length)), None)
        if found is None:
            found = Encoder(self.tokenizer, self.max_length)
            if encoders is not None:  # kept by the caller (a sweep's workspace) for the next model
                encoders.append(found)
        self.encoder = found
        self.busy_s = 0.0  # seconds inside the model's forward passes and generation (a sweep's `scoring_s`)
        self.batch_size = int(batch_size) if batch_size not in (None, "auto", "") else None
        self.max_gen_toks = int(max_gen_toks)
        pad = self.tokenizer.pad_token_id  # lm-eval's choice when the tokenizer has none, as its hf model makes it
        self.pad_id = pad if pad is not None and pad < model.get_input_embeddings().num_embeddings else 0
        self.advance: Callable[[int], None] = lambda n: None  # progress, per request answered
        # a static KV cache (which transformers compiles on CUDA) where the architecture supports it
        self.static_cache = self.device.type == "cuda" and bool(getattr(model, "_can_compile_fullgraph", False))
        self.rows: list[int] = []  # rows of each generation batch run, for the benchmarks

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        if not chat_template:
            return None
        return self.tokenizer.chat_template if isinstance(self.tokenizer.chat_template, str) else None

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt, continue_final_message=False
        )

    def _budget(self, items: list[list[Encoded]]) -> int:
        width = max(len(e.inp) for item in items for e in item)
        if self.batch_size:
            return width * self.batch_size
        if self.device.type != "cuda":
            return CPU_TOKEN_BUDGET
        return token_budget(self.model, width, GPU_TOKEN_BUDGET)

    def _score(self, groups: list[list[Encoded]], advance: Callable[[int], None]) -> list[list[tuple[float, bool]]]:
        started = time.perf_counter()
        try:
            return score_items(self.model, groups, self.pad_id, self._budget(groups), advance)
        finally:
            self.busy_s += time.perf_counter() - started

    # --- the three request types -----------------------------------------------------------------------------
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        groups: dict[tuple, list[int]] = {}
        for i, request in enumerate(requests):
            key = (request.task_name, request.doc_id) if request.doc_id is not None else ("", i)
            groups.setdefault(key, []).append(i)
        members = list(groups.values())
        encoded = [[self.encoder.pair(*requests[i].args) for i in idxs] for idxs in members]
        scored = self._score(encoded, lambda n: self.advance(n))
        out: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        for idxs, results in zip(members, scored):
            for i, (ll, greedy) in zip(idxs, results):
                out[i] = (ll, greedy)
                self.cache_hook.add_partial("loglikelihood", requests[i].args, (ll, greedy))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        out = []
        for request in requests:
            (text,) = request.args[:1]
            windows = map(
                lm_utils.make_disjoint_window,
                lm_utils.get_rolling_token_windows(
                    token_list=self.encoder.encode(text),
                    prefix_token=self.encoder.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            )
            encoded = []
            for context, continuation in windows:
                inp = (context + continuation)[-(self.max_length + 1) :][:-1]
                encoded.append([Encoded(inp=inp, cont=continuation, ctx_len=len(inp) - len(continuation) + 1)])
            total = sum(results[0][0] for results in self._score(encoded, lambda n: None))
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            self.advance(1)
        return out

    @torch.inference_mode()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        tokenizer = self.tokenizer
        lengths = {r.args[0]: len(self.encoder.encode(r.args[0])) for r in requests}
        order = Collator(
            [r.args for r in requests],
            sort_fn=lambda req: (-lengths[req[0]], req[0]),
            group_by="gen_kwargs",
            group_fn=lambda req: req[1],
        )
        eos = tokenizer.decode(tokenizer.eos_token_id) if tokenizer.eos_token_id is not None else None
        results = []
        for group in order.get_batched(n=0):  # n=0: each set of generation arguments whole, longest first
            kwargs = normalize_gen_kwargs(dict(group[0][1]), self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen_toks = kwargs.pop("max_gen_toks")
            kwargs.setdefault("temperature", 0.0)
            if kwargs["temperature"] == 0.0 and kwargs.get("do_sample") is None:
                kwargs["do_sample"] = False
            if kwargs.get("do_sample") is False and kwargs["temperature"] == 0.0:
                kwargs.pop("temperature")
            start = 0
            for rows in self._rows([lengths[context] for context, _ in group], max_gen_toks):
                chunk = group[start : start + rows]
                start += rows
                contexts = [context for context, _ in chunk]
                for text, (context, gen_kwargs) in zip(self._generate(contexts, until, max_gen_toks, kwargs), chunk):
                    results.append(text)
                    self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
                    self.advance(1)
        return order.get_original(results)

    def _rows(self, lengths: list[int], max_gen_toks: int) -> list[int]:
        """Rows of each batch over one group's prompts (longest first): the set batch size, one on a CPU, else as
        many as the free GPU memory holds at each batch's own width."""
        fixed = self.batch_size or (CPU_GENERATE_BATCH if self.device.type != "cuda" else None)
        if fixed:
            return [min(fixed, len(lengths) - i) for i in range(0, len(lengths), fixed)]
        s = Shape.of(self.model)
        widest = self.max_length - max_gen_toks  # contexts are left-truncated to this (`_encode_left`)
        vocab = self.model.get_output_embeddings().weight.shape[0]
        return generation_rows(
            [min(n, widest) for n in lengths], max_gen_toks, s, vocab, int(GENERATE_MEMORY_SHARE * s.free)
        )

    def _generate(self, contexts: list[str], until: list[str], max_gen_toks: int, kwargs: dict) -> list[str]:
        """Greedy generations of one batch; a batch that runs out of GPU memory is halved and retried."""
        ids, mask = self._encode_left(contexts, self.max_length - max_gen_toks)
        started = time.perf_counter()
        if self.static_cache:
            kwargs = {**kwargs, "cache_implementation": "static"}
        self.rows.append(len(contexts))
        try:
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_length=kwargs.get("max_length", ids.shape[1] + max_gen_toks),
                stopping_criteria=stop_sequences_criteria(self.tokenizer, until, ids.shape[1], ids.shape[0]),
                pad_token_id=self.pad_id,
                use_cache=True,
                **{k: v for k, v in kwargs.items() if k != "max_length"},
            )
        except torch.OutOfMemoryError:
            release()
            if len(contexts) == 1:
                raise out_of_memory(
                    f"generating {max_gen_toks} tokens after {ids.shape[1]}", "lower max_gen_toks (--gen-kwargs)"
                ) from None
            half = len(contexts) // 2
            return self._generate(contexts[:half], until, max_gen_toks, kwargs) + self._generate(
                contexts[half:], until, max_gen_toks, kwargs
            )
        finally:
            self.busy_s += time.perf_counter() - started
        return [
            postprocess_generated_text(
                generation=self.tokenizer.decode(row[ids.shape[1] :], skip_special_tokens=True),
                stop=until,
                think_end_token=None,
            )
            for row in out.tolist()
        ]

    def _encode_left(self, texts: list[str], max_context: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded, left-truncated context tokens, as lm-eval's hf model encodes a generation batch."""
        old_side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        prefix = self.tokenizer.bos_token
        special = {"add_special_tokens": False} if prefix and texts[0].startswith(prefix) else {}
        try:
            encoding = self.tokenizer(texts, padding="longest", return_tensors="pt", **special)
        finally:
            self.tokenizer.padding_side = old_side
        ids, mask = encoding["input_ids"][:, -max_context:], encoding["attention_mask"][:, -max_context:]
        return ids.to(self.device), mask.to(self.device)


def row_bytes(shape: Shape, prompt: int, max_gen_toks: int, vocab: int) -> int:
    """GPU bytes one row of a left-padded generation batch needs when its widest prompt has `prompt` tokens: its KV
    cache over the prompt and every generated token (keys and values of each layer: 2 x layers x KV heads x head
    size x element; Llama-2-7B 0.5 MiB a token, Llama-3-8B 0.125 MiB), the prefill's activations of one layer and its
    attention scores (kernels for arbitrary masks may materialize them), and the float32 logits and scores of a step."""
    kv = 2 * shape.layers * shape.kv_heads * shape.head_dim * shape.element
    activations = shape.element * (4 * shape.hidden + 3 * shape.intermediate + 2 * shape.kv_heads * shape.head_dim)
    scores = shape.heads * prompt * prompt * shape.element
    return (prompt + max_gen_toks) * kv + prompt * activations + scores + 2 * 4 * vocab


def generation_rows(lengths: list[int], max_gen_toks: int, shape: Shape, vocab: int, free: int) -> list[int]:
    """Rows of each batch over prompts sorted longest first: a batch is padded to its first prompt, and takes rows
    while they fit in `free` bytes at that width, so the shorter prompts later in the order go in larger batches."""
    rows, start = [], 0
    while start < len(lengths):
        fit = max(1, free // row_bytes(shape, lengths[start], max_gen_toks, vocab))
        rows.append(min(fit, len(lengths) - start))
        start += rows[-1]
    return rows
