"""The checks a leaderboard submission fails on, run before uploading: each one pass, fail or skipped.

A check whose prerequisite failed is skipped rather than failed, so one fault gives one line.
A merge can score well on log-likelihood tasks and still talk gibberish, hence the generation smoke test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from merger.core.device import compute_dtype, resolve_device
from merger.core.hf import front_matter, inspect_model, pickled_files, require_model_folder
from merger.publish.card import inputs_of

PROMPTS = [
    "What is the capital of France? Answer in one short sentence.",
    "Name three primary colors, briefly.",
    "Write one sentence about the sea.",
]
MAX_NEW_TOKENS = 64


@dataclass
class Check:
    name: str
    status: str  # pass, fail, skip
    detail: str


def degenerate(text: str, ended: bool) -> str | None:
    """Why a reply looks broken, or None: empty, looping on a phrase, or not stopping."""
    words = text.split()
    if not words:
        return "empty reply"
    grams = [" ".join(words[i : i + 3]) for i in range(len(words) - 2)]
    for gram in set(grams):
        if grams.count(gram) >= 3:
            return f"repeats '{gram}'"
    if not ended and len(set(words)) < len(words) / 2:
        return "never ends and keeps repeating itself"
    return None


def run_checks(model_dir: Path) -> list[Check]:
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = require_model_folder(Path(model_dir), weights=False, tokenizer=False)
    checks: list[Check] = []

    def add(name: str, ok: bool | None, detail: str) -> bool:
        checks.append(Check(name, "skip" if ok is None else ("pass" if ok else "fail"), detail))
        return bool(ok)

    weights = sorted(model_dir.glob("*.safetensors"))
    pickles = pickled_files(model_dir)
    safe = add(
        "safetensors only",
        bool(weights) and not pickles,
        f"{len(weights)} safetensors file(s)"
        if weights and not pickles
        else f"pickled weights present: {', '.join(pickles)}"
        if pickles
        else "no safetensors weights",
    )

    finite = None
    if safe:
        bad = None
        for path in weights:
            with safe_open(path, framework="pt") as handle:
                for name in handle.keys():
                    tensor = handle.get_tensor(name)
                    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                        bad = name
                        break
            if bad:
                break
        finite = add("weights finite", bad is None, f"NaN or inf in {bad}" if bad else "no NaN or inf")
    else:
        add("weights finite", None, "skipped: no safetensors weights")

    model = None
    if safe:
        try:
            device = resolve_device("auto")  # on a GPU box, on the GPU in its compute dtype (not 4 bytes a weight)
            model = AutoModelForCausalLM.from_pretrained(
                model_dir, trust_remote_code=False, dtype=compute_dtype(device), device_map=device
            )
            add("loads without trust_remote_code", True, type(model).__name__)
        except Exception as exc:  # any load failure is the finding itself
            add("loads without trust_remote_code", False, str(exc).splitlines()[0][:200])
    else:
        add("loads without trust_remote_code", None, "skipped: weights are not safetensors")

    tokenizer = None
    has_files = any((model_dir / n).exists() for n in ("tokenizer.json", "tokenizer.model"))
    if not has_files:
        add("tokenizer", False, "tokenizer.json (or tokenizer.model) is missing")
    else:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        problems = []
        if tokenizer.eos_token is None:
            problems.append("no eos_token")
        if model is not None:
            rows = model.get_input_embeddings().weight.shape[0]
            if len(tokenizer) > rows:
                problems.append(f"tokenizer has {len(tokenizer)} tokens but the embedding has {rows} rows")
            for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
                value = getattr(tokenizer, key)
                if value is not None and value >= rows:
                    problems.append(f"{key} {value} is outside the embedding")
        add("tokenizer", not problems, "; ".join(problems) or f"{len(tokenizer)} tokens, specials present")

    if tokenizer is not None and tokenizer.chat_template:
        try:
            rendered = tokenizer.apply_chat_template(
                [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
            )
            add("chat template renders", bool(rendered), f"{len(rendered)} characters")
        except Exception as exc:  # a broken template is the finding itself
            add("chat template renders", False, str(exc).splitlines()[0])
    else:
        add(
            "chat template renders",
            False if tokenizer is not None else None,
            "no chat template" if tokenizer is not None else "skipped: no tokenizer",
        )

    card = front_matter(model_dir / "README.md")
    missing = [k for k in ("license", "model-index") if not card.get(k)]
    if (model_dir / "mergekit_config.yml").exists() and "merge" not in (card.get("tags") or []):
        missing.append("the 'merge' tag")
    add(
        "model card",
        not missing,
        "README.md lacks " + ", ".join(missing)
        if missing
        else f"license {card['license']}, {len(card['model-index'][0].get('results', []))} result(s)",
    )

    if model is not None:
        params = sum(p.numel() for p in model.parameters())
        dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
        note = _tie_note(model_dir, model)
        add(
            "parameters and precision",
            note is None,
            note
            or f"{params / 1e6:.1f}M parameters, stored as {_stored_dtype(weights)}, loaded as {', '.join(dtypes)}",
        )
    else:
        add("parameters and precision", None, "skipped: model did not load")

    if model is not None and tokenizer is not None and tokenizer.chat_template and finite:
        findings = []
        for prompt in PROMPTS:
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
            )["input_ids"]
            with torch.inference_mode():
                out = model.generate(
                    ids.to(model.device),
                    max_new_tokens=MAX_NEW_TOKENS,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                )
            new = out[0, ids.shape[1] :].cpu()
            ended = tokenizer.eos_token_id in new.tolist()
            reason = degenerate(tokenizer.decode(new, skip_special_tokens=True), ended)
            if reason:
                findings.append(f"'{prompt[:30]}...': {reason}")
        add("generation", not findings, "; ".join(findings) or f"{len(PROMPTS)} chat prompts answered sensibly")
    else:
        add("generation", None, "skipped: model, tokenizer, chat template or finite weights missing")
    return checks


def _stored_dtype(weights: list[Path]) -> str:
    from safetensors import safe_open

    with safe_open(weights[0], framework="pt") as handle:
        first = next(iter(handle.keys()))
        return str(handle.get_slice(first).get_dtype()).lower()


def _tie_note(model_dir: Path, model) -> str | None:
    """An lm_head untied by mistake doubles the embedding's parameters; compare with the inputs."""
    tied_inputs = []
    for ref in inputs_of(model_dir):
        try:
            tied_inputs.append(inspect_model(ref).tied_embeddings)
        except LookupError:  # an input no longer at hand says nothing either way
            continue
    if tied_inputs and all(tied_inputs) and not model.config.tie_word_embeddings:
        return "lm_head is untied although every input ties it to the embedding"
    return None
