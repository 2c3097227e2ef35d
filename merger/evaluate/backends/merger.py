"""`merger`: merger's fast scorer (`evaluate/lm.py`): one pass over each shared prefix, requests tokenized once per
tokenizer; a sweep scores the candidate's live model as it is (merged in memory, in the device's compute dtype)."""

from __future__ import annotations

NEEDS_FOLDER = False


def missing() -> str | None:
    return None


def make(settings, model, tokenizer, folder, device, encoders):
    from merger.evaluate.lm import MergerLM

    if model is None:
        return MergerLM(pretrained=str(folder), device=device, batch_size=settings.batch_size, encoders=encoders)
    return MergerLM(model=model, tokenizer=tokenizer, batch_size=settings.batch_size, encoders=encoders)
