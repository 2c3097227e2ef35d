"""`hf`: lm-eval's own `HFLM`. A sweep saves each candidate and `HFLM` loads its folder, as `lm_eval --model hf`
and `merger eval --backend hf` do (its own dtype and device handling), so a sweep's scores are theirs. A caller with
a model in memory may hand it over (lm-eval takes a `PreTrainedModel` as `pretrained`)."""

from __future__ import annotations

from merger.core.device import resolve_device

NEEDS_FOLDER = True


def missing() -> str | None:
    return None


def make(settings, model, tokenizer, folder, device, encoders):
    from lm_eval.models.huggingface import HFLM

    if model is not None:
        return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size or 1)
    device = resolve_device(device)
    batch_size = settings.batch_size or ("auto" if device != "cpu" else 1)
    return HFLM(pretrained=str(folder), device=device, batch_size=batch_size)
