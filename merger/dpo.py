"""DPO refinement with trl's DPOTrainer: LoRA by default, merged back into a plain Hugging Face folder.

`DPOSettings` is both the `dpo:` section of a recipe and the flags of `merger dpo`, as trl pairs each
trainer with its config. Training checkpoints live in a work folder beside the output, so an interrupted
run resumes; the output folder appears only when the merged model is complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from merger.atomic import atomic_output_dir
from merger.errors import Problem, UserError

LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
PROVENANCE = ("mergekit_config.yml", "merger_recipe.yaml", "merger_candidate.json")


class DPOSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: str | None = None
    full: bool = False
    qlora: bool = False
    lora_r: int = Field(16, gt=0)
    lora_alpha: int = Field(32, gt=0)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | str = "all-linear"
    beta: float = Field(0.1, gt=0)
    loss_type: str = "sigmoid"
    lr: float | None = Field(None, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0)
    batch_size: int = Field(2, gt=0)
    grad_accum: int = Field(1, gt=0)
    max_length: int = Field(1024, gt=0)
    overlong: Literal["drop", "truncate"] = "drop"
    precompute_ref_log_probs: bool = False
    decontaminate: bool = False
    against: list[str] | None = None
    data_dir: str | None = None
    seed: int = 42
    save_steps: int = Field(25, gt=0)

    @field_validator("loss_type")
    @classmethod
    def _known_loss(cls, value: str) -> str:
        if value not in LOSS_TYPES:
            raise ValueError(f"unknown loss_type '{value}'; trl knows: {', '.join(LOSS_TYPES)}")
        return value

    @field_validator("against")
    @classmethod
    def _known_tasks(cls, value: list[str] | None) -> list[str] | None:
        from merger.evaluate.tasks import TASKS

        for name in value or []:
            if name not in TASKS:
                raise ValueError(f"unknown task '{name}'; known: {', '.join(TASKS)}")
        return value

    @property
    def learning_rate(self) -> float:
        """Full fine-tuning wants a learning rate about ten times smaller than LoRA."""
        return self.lr if self.lr is not None else (5e-6 if self.full else 5e-5)

    @classmethod
    def parse(cls, values: dict[str, Any], file: str) -> "DPOSettings":
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise UserError([Problem(file, ".".join(str(p) for p in e["loc"]) or "dpo",
                                     e["msg"].removeprefix("Value error, ")) for e in exc.errors()]) from None


def _check_model_folder(model_dir: Path) -> None:
    if not (model_dir / "config.json").exists():
        raise UserError.one(str(model_dir), "config.json", "missing: not a Hugging Face model folder")
    if not list(model_dir.glob("*.safetensors")):
        raise UserError.one(str(model_dir), "*.safetensors", "no safetensors weights")
    if not any((model_dir / n).exists() for n in ("tokenizer.json", "tokenizer.model")):
        raise UserError.one(str(model_dir), "tokenizer.json", "missing: the model folder has no tokenizer")


def prepare_pairs(settings: DPOSettings, tokenizer) -> tuple[list, dict[str, Any]]:
    """Read, validate and decontaminate the data; returns the training pairs and what was found."""
    from merger import decontaminate
    from merger.evaluate.data import data_dir
    from merger.preferences import enforce_length, fingerprint, normalize, read_rows

    if not settings.data:
        raise UserError.one("dpo", "data", "no preference data given (--data or dpo.data)")
    rows = read_rows(settings.data)
    pairs, report = normalize(rows, settings.data)
    root = data_dir(settings.data_dir)
    tasks = settings.against or decontaminate.available_tasks(root)
    contamination, flags = decontaminate.check([p.text() for p in pairs], tasks, root)
    if settings.decontaminate:
        pairs = [p for p, hit in zip(pairs, flags) if not hit]
        contamination.dropped = contamination.matched
    pairs = enforce_length(pairs, tokenizer, settings.max_length, settings.overlong, report)
    report.kept = len(pairs)
    if not pairs:
        raise UserError.one(settings.data, "--data", f"no usable pairs left (dropped: {report.dropped})")
    facts = {
        "source": settings.data,
        "fingerprint": fingerprint(rows),
        "pairs_read": report.read,
        "pairs_used": report.kept,
        "dropped": report.dropped,
        "truncated": report.truncated,
        "contamination_examples": contamination.examples,
    }
    return pairs, {"data": facts, "decontamination": contamination.counts()}


def _work_dir(out: Path, model_dir: Path, settings: DPOSettings, data_fingerprint: str) -> Path:
    """Same model, settings and data -> same work folder, so a rerun resumes from its checkpoints."""
    key = json.dumps([str(model_dir.resolve()), settings.model_dump(), data_fingerprint], sort_keys=True)
    return out.parent / f".{out.name}.dpo-work-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def _inherit_card(model_dir: Path, out: Path) -> None:
    """A refined model keeps its base's license and lineage (a merge's full card comes from `merger card`)."""
    import yaml

    from merger.card import front_matter

    base = front_matter(model_dir / "README.md")
    meta = {"license": base.get("license", "other"), "base_model": base.get("base_model", str(model_dir)),
            "tags": ["dpo", "trl", "merger"]}
    (out / "README.md").write_text("---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\n"
                                   f"{model_dir.name} refined with DPO by `merger dpo`; see merger_dpo.json.\n",
                                   encoding="utf-8")


def run_dpo(model_dir: Path, settings: DPOSettings, out: Path, *, device: str = "auto", force: bool = False,
            show_progress: bool = True) -> Path:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from merger.device import compute_dtype, resolve_device
    from merger.merging import ensure_target_free
    from merger.training_log import MetricsLog, RichProgress, read_metrics

    model_dir, out = Path(model_dir), Path(out)
    _check_model_folder(model_dir)
    ensure_target_free(out, force)
    device = resolve_device(device)
    if settings.qlora and (device != "cuda" or settings.full):
        raise UserError.one("dpo", "qlora", "4-bit QLoRA needs a CUDA device and LoRA (not --full)")

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if not tokenizer.chat_template:
        raise UserError.one(str(model_dir), "chat_template", "the tokenizer has no chat template to format pairs")
    pairs, facts = prepare_pairs(settings, tokenizer)
    work = _work_dir(out, model_dir, settings, facts["data"]["fingerprint"])
    work.mkdir(parents=True, exist_ok=True)

    dtype = compute_dtype(device)
    quantization = None
    if settings.qlora:
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, quantization_config=quantization)
    peft_config = None
    if not settings.full:
        from peft import LoraConfig

        peft_config = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                                 target_modules=settings.target_modules, task_type="CAUSAL_LM")
    args = DPOConfig(
        output_dir=str(work / "checkpoints"),
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps or -1,
        beta=settings.beta,
        loss_type=[settings.loss_type],
        max_length=settings.max_length,
        precompute_ref_log_probs=settings.precompute_ref_log_probs,
        logging_steps=1,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=1,
        report_to=[],
        disable_tqdm=True,
        seed=settings.seed,
        use_cpu=device == "cpu",
        bf16=device == "cuda" and dtype == torch.bfloat16,
        fp16=False,
    )
    callbacks = [MetricsLog(work / "dpo_metrics.jsonl")] + ([RichProgress()] if show_progress else [])
    trainer = DPOTrainer(model=model, ref_model=None, args=args, processing_class=tokenizer,
                         train_dataset=Dataset.from_list([p.as_row() for p in pairs]),
                         peft_config=peft_config, callbacks=callbacks)
    if show_progress:
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; RichProgress shows them readably
    resume = any((work / "checkpoints").glob("checkpoint-*"))
    result = trainer.train(resume_from_checkpoint=True if resume else None)

    trained = trainer.model
    if settings.qlora:
        from peft import PeftModel

        trained.save_pretrained(work / "adapter")
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        trained = PeftModel.from_pretrained(base, work / "adapter")
    if not settings.full:
        trained = trained.merge_and_unload()
    metrics = read_metrics(work / "dpo_metrics.jsonl")
    with atomic_output_dir(out, replace=force) as tmp:
        trained.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for name in PROVENANCE:
            if (model_dir / name).exists():
                shutil.copyfile(model_dir / name, tmp / name)
        (tmp / "dpo_metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics), encoding="utf-8")
        summary = {
            "base_model": str(model_dir),
            "settings": settings.model_dump(),
            "learning_rate": settings.learning_rate,
            "device": device,
            "steps": trainer.state.global_step,
            "train_runtime": result.metrics.get("train_runtime"),
            **facts,
        }
        (tmp / "merger_dpo.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        _inherit_card(model_dir, tmp)
    shutil.rmtree(work, ignore_errors=True)
    return out
