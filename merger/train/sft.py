"""Continued pretraining and SFT on trl's SFTTrainer.

- `pretrain`: {"text"} rows, packed into max_length blocks (trl's "wrapped" packing, as run_clm groups texts).
- `sft`: chat rows ({"messages"}), or prompt with completion (or with chosen: the chosen side of preference pairs),
  rendered with the model's chat template; the loss on the completion only, as trl does for prompt-completion rows.
With `distill`, the loss mixes cross-entropy with KL to a teacher's logits (`distill.py`).
"""

from __future__ import annotations

from typing import Any

from merger.config.results import Decontamination, TrainData
from merger.config.train import SFTSettings
from merger.core.errors import UserError
from merger.train.data import RowReport, messages, read_rows, summary
from merger.train.screen import screen

TEXT = ("text",)
CHAT = ("messages", "prompt+completion", "prompt+chosen")


def kind_of(source: str) -> str:
    """'pretrain' for plain-text data, 'sft' for chat data: what `merger train` runs."""
    return "pretrain" if "text" in read_rows(source, TEXT + CHAT, "training data")[0] else "sft"


def _row(row: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The row as trl takes it (text, messages, or conversational prompt-completion); None when empty."""
    if kind == "pretrain":
        text = row.get("text")
        return {"text": text} if isinstance(text, str) and text.strip() else None
    if "messages" in row:
        chat = messages(row["messages"], "user")
        return {"messages": chat} if chat and any(m["content"].strip() for m in chat) else None
    prompt = messages(row.get("prompt"), "user")
    completion = messages(row.get("completion", row.get("chosen")), "assistant")
    if not prompt or not completion or not completion[-1]["content"].strip():
        return None
    if row.get("system") and prompt[0]["role"] != "system":
        prompt = [{"role": "system", "content": str(row["system"])}] + prompt
    return {"prompt": prompt, "completion": completion[-1:]}


def _words(row: dict[str, Any]) -> str:
    if "text" in row:
        return row["text"]
    return " ".join(m["content"] for key in ("messages", "prompt", "completion") for m in row.get(key, []))


def prepare(kind: str, settings: SFTSettings, tokenizer, references) -> tuple[list[dict], TrainData, Decontamination]:
    rows = read_rows(
        settings.data, TEXT if kind == "pretrain" else CHAT, "pretraining text" if kind == "pretrain" else "SFT data"
    )
    if kind == "sft" and not tokenizer.chat_template:
        raise UserError.one(settings.data, "sft", "the model's tokenizer has no chat template to render chat rows")
    report = RowReport(read=len(rows))
    kept: list[dict] = []
    for number, row in enumerate(rows, 1):
        made = _row(row, kind)
        if made is None:
            report.drop("empty or malformed")
            if kind == "sft" and not ("messages" in row or "prompt" in row):
                raise UserError.one(settings.data, f"row {number}", "needs messages, or prompt with completion")
        else:
            kept.append(made)
    keep, contamination, examples = screen([_words(r) for r in kept], settings, references)
    kept = [r for r, k in zip(kept, keep) if k]
    report.kept = len(kept)
    data = summary(settings.data, rows, report, contamination, examples)
    return kept, data, contamination


def trainer(model, tokenizer, dataset, settings: SFTSettings, args: dict, peft_config, callbacks, teacher=None):
    from trl import SFTConfig, SFTTrainer

    text = "text" in dataset.column_names
    packing = settings.packing if settings.packing is not None else text
    config = SFTConfig(**args, packing=packing, packing_strategy="wrapped" if text else "bfd")
    if teacher is None:
        trainer_class, extra = SFTTrainer, {}
    else:
        from merger.train.distill import DistillTrainer

        trainer_class = DistillTrainer
        extra = {"teacher": teacher, "kl_weight": settings.kl_weight, "temperature": settings.temperature}
    return trainer_class(
        model=model,
        args=config,
        processing_class=tokenizer,
        train_dataset=dataset,
        peft_config=peft_config,
        callbacks=callbacks,
        **extra,
    )
