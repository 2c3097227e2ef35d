"""`vllm`: lm-eval's `vllm` model, over a folder only (vLLM loads its own weights): a sweep saves each candidate
before scoring it. Optional: refused in one line where vllm is not installed.

Prefix caching is off: with it on, vLLM's prompt log-probabilities can depend on the order of the requests (vLLM
issue #42019), and lm-eval's log-likelihoods are prompt log-probabilities. Generation batches in vLLM's engine."""

from __future__ import annotations

import importlib.util

from merger.core.errors import UserError

NEEDS_FOLDER = True


def missing() -> str | None:
    return None if importlib.util.find_spec("vllm") else "vllm is not installed here; pip install vllm"


def make(settings, model, tokenizer, folder, device, encoders):
    if folder is None:
        raise UserError.one("eval.backend", "vllm", "scores models on disk only; save the model first")
    if missing():
        raise UserError.one("eval.backend", "vllm", missing())
    from lm_eval.api.registry import get_model

    return get_model("vllm").create_from_arg_obj(
        {"pretrained": str(folder), "batch_size": settings.batch_size or "auto", "enable_prefix_caching": False}
    )
