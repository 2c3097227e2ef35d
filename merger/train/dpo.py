"""DPO on trl's DPOTrainer: preference pairs in, the input model as the reference (with LoRA, the adapter-free base;
a chain of DPO steps is stepwise DPO, each step's reference the step before's output)."""

from __future__ import annotations

from merger.config.results import Decontamination, TrainData
from merger.config.train import DPOSettings
from merger.train.data import read_rows, summary
from merger.train.pairs import COLUMNS, enforce_length, normalize
from merger.train.screen import screen


def prepare(kind: str, settings: DPOSettings, tokenizer, references) -> tuple[list[dict], TrainData, Decontamination]:
    """The pairs trained on, as trl's conversational rows, and what was read, dropped and found."""
    rows = read_rows(settings.data, ("+".join(COLUMNS),), "preference pairs")
    pairs, report = normalize(rows, settings.data)
    keep, contamination, examples = screen([p.text() for p in pairs], settings, references)
    pairs = [p for p, kept in zip(pairs, keep) if kept]
    pairs = enforce_length(pairs, tokenizer, settings.max_length, settings.overlong, report)
    report.kept = len(pairs)
    data = summary(settings.data, rows, report, contamination, examples)
    return [p.as_row() for p in pairs], data, contamination


def trainer(model, tokenizer, dataset, settings: DPOSettings, args: dict, peft_config, callbacks, teacher=None):
    from trl import DPOConfig, DPOTrainer

    config = DPOConfig(
        **args,
        beta=settings.beta,
        loss_type=[settings.loss_type],
        precompute_ref_log_probs=settings.precompute_ref_log_probs,
    )
    return DPOTrainer(
        model=model,
        ref_model=None,
        args=config,
        processing_class=tokenizer,
        train_dataset=dataset,
        peft_config=peft_config,
        callbacks=callbacks,
    )
