"""DPO refinement with trl's DPOTrainer: LoRA by default, merged back into a plain Hugging Face folder.

Training checkpoints live in a work folder beside the output, so an interrupted run resumes; the output folder
appears only when the merged model is complete, with `merger_dpo.json` (`DPORun`) saying how it was made.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import yaml

from merger.config.dpo import DPOSettings
from merger.config.results import Decontamination, DPORun, PairData
from merger.core.atomic import atomic_output_dir, ensure_target_free
from merger.core.device import compute_dtype, resolve_device
from merger.core.errors import UserError
from merger.core.hf import front_matter, require_model_folder
from merger.dpo import decontaminate
from merger.dpo.pairs import Pair, enforce_length, fingerprint, normalize, read_rows
from merger.dpo.progress import MetricsLog, RichProgress, read_metrics

PROVENANCE = ("mergekit_config.yml", "merger_recipe.yaml", "merger_candidate.json")


def prepare_pairs(
    settings: DPOSettings, tokenizer, references: dict[str, list[tuple[str, str]]]
) -> tuple[list[Pair], PairData, Decontamination]:
    """Read, validate and decontaminate the data; returns the training pairs and what was found."""
    rows = read_rows(settings.data)
    pairs, report = normalize(rows, settings.data)
    contamination, examples, flags = decontaminate.check([p.text() for p in pairs], references)
    if settings.decontaminate:
        pairs = [p for p, hit in zip(pairs, flags) if not hit]
        contamination.dropped = contamination.matched
    pairs = enforce_length(pairs, tokenizer, settings.max_length, settings.overlong, report)
    report.kept = len(pairs)
    if not pairs:
        raise UserError.one(settings.data, "--data", f"no usable pairs left (dropped: {report.dropped})")
    data = PairData(
        source=settings.data,
        fingerprint=fingerprint(rows),
        pairs_read=report.read,
        pairs_used=report.kept,
        dropped=report.dropped,
        truncated=report.truncated,
        contamination_examples=examples,
    )
    return pairs, data, contamination


def _work_dir(out: Path, model_dir: Path, settings: DPOSettings, data_fingerprint: str) -> Path:
    """Same model, settings and data -> same work folder, so a rerun resumes from its checkpoints."""
    key = json.dumps([str(model_dir.resolve()), settings.model_dump(), data_fingerprint], sort_keys=True)
    return out.parent / f".{out.name}.dpo-work-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def _inherit_card(model_dir: Path, out: Path) -> None:
    """A refined model keeps its base's license and lineage (a merge's full card comes from `merger card`)."""
    base = front_matter(model_dir / "README.md")
    meta = {
        "license": base.get("license", "other"),
        "base_model": base.get("base_model", str(model_dir)),
        "tags": ["dpo", "trl", "merger"],
    }
    (out / "README.md").write_text(
        "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\n"
        f"{model_dir.name} refined with DPO by `merger dpo`; see merger_dpo.json.\n",
        encoding="utf-8",
    )


def check_fits(model_dir: Path, settings: DPOSettings, dtype) -> None:
    """One line, before any loading, when the weights cannot fit the GPU as asked: LoRA holds the weights once in
    the compute dtype (QLoRA a quarter of that), full fine-tuning about four times (weights, gradients, Adam)."""
    import torch

    from merger.core.hf import parameter_count

    size = parameter_count(model_dir) * torch.finfo(dtype).bits // 8
    need = size // 4 if settings.qlora else (4 * size if settings.full else size)
    free, total = torch.cuda.mem_get_info()
    if need > free:
        hint = "use --qlora (4-bit weights)" if not settings.qlora else "use a GPU with more memory"
        raise UserError.one(
            str(model_dir),
            "",
            f"{'full fine-tuning' if settings.full else 'QLoRA' if settings.qlora else 'LoRA'} needs about "
            f"{need / 2**30:.1f} GiB for the weights alone, {free / 2**30:.1f} of {total / 2**30:.1f} GiB are free; "
            + hint,
        )


def run_dpo(
    model_dir: Path,
    settings: DPOSettings,
    out: Path,
    references: dict[str, list[tuple[str, str]]],
    *,
    device: str = "auto",
    force: bool = False,
    show_progress: bool = True,
) -> DPORun:
    """Refine `model_dir` into `out`; `references` are the eval items (task -> [(id, text)]) checked for overlap."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    model_dir, out = Path(model_dir), Path(out)
    require_model_folder(model_dir)
    ensure_target_free(out, force)
    device = resolve_device(device)
    if settings.qlora and importlib.util.find_spec("bitsandbytes") is None:
        raise UserError.one("dpo", "qlora", "4-bit QLoRA needs bitsandbytes: pip install 'merger[qlora]'")
    if settings.qlora and (device != "cuda" or settings.full):
        raise UserError.one("dpo", "qlora", "4-bit QLoRA needs a CUDA device and LoRA (not --full)")
    dtype = compute_dtype(device)
    if device == "cuda":
        check_fits(model_dir, settings, dtype)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if not tokenizer.chat_template:
        raise UserError.one(str(model_dir), "chat_template", "the tokenizer has no chat template to format pairs")
    pairs, data, contamination = prepare_pairs(settings, tokenizer, references)
    work = _work_dir(out, model_dir, settings, data.fingerprint)
    work.mkdir(parents=True, exist_ok=True)

    quantization = None
    if settings.qlora:
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    # fp16 (a GPU without native bf16) trains with loss scaling: full fine-tuning keeps float32 master weights
    master = torch.float32 if settings.full and dtype == torch.float16 else dtype
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=master, quantization_config=quantization, device_map={"": 0} if device == "cuda" else None
    )
    peft_config = None
    if not settings.full:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=settings.lora_r,
            lora_alpha=settings.lora_alpha,
            lora_dropout=settings.lora_dropout,
            target_modules=settings.target_modules,
            task_type="CAUSAL_LM",
        )
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
        fp16=device == "cuda" and dtype == torch.float16,
    )
    if device == "cuda":  # one GPU per run: several visible ones would make the Trainer wrap it in DataParallel
        _ = args.device
        args._n_gpu = 1
    callbacks = [MetricsLog(work / "dpo_metrics.jsonl")] + ([RichProgress()] if show_progress else [])
    trainer = DPOTrainer(
        model=model,
        ref_model=None,
        args=args,
        processing_class=tokenizer,
        train_dataset=Dataset.from_list([p.as_row() for p in pairs]),
        peft_config=peft_config,
        callbacks=callbacks,
    )
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
        (tmp / "dpo_metrics.jsonl").write_text(
            "".join(m.model_dump_json(exclude_none=True) + "\n" for m in metrics), encoding="utf-8"
        )
        run = DPORun(
            base_model=str(model_dir),
            settings=settings,
            learning_rate=settings.learning_rate,
            device=device,
            steps=trainer.state.global_step,
            train_runtime=result.metrics.get("train_runtime"),
            data=data,
            decontamination=contamination,
        )
        (tmp / "merger_dpo.json").write_text(run.model_dump_json(indent=2) + "\n", encoding="utf-8")
        _inherit_card(model_dir, tmp)
    shutil.rmtree(work, ignore_errors=True)
    return run
