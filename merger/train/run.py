"""One training step, whatever the trainer: check, load, adapt (LoRA or the layers trained), train with checkpoints,
merge back, write. The trainer modules (`sft.py`, `dpo.py`) give only their data and trl's trainer.

Checkpoints, the metrics log and the before-training perplexity live in a work folder beside the output, named by
the input, the settings and the data, so an interrupted run resumes where its last checkpoint left it. The output
folder appears only when the trained model is complete, with `merger_train.json` (`TrainHistory`): the input's
training steps and this one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import ModuleType

import yaml

from merger.config.results import HISTORY, PROVENANCE, Perplexity, TrainHistory, TrainRun
from merger.config.train import SFTSettings, TrainSettings, upscaled_from
from merger.core.atomic import atomic_output_dir, atomic_write, ensure_target_free
from merger.core.device import compute_dtype, resolve_device
from merger.core.errors import UserError
from merger.core.hf import front_matter, require_model_folder
from merger.train import dpo, model, sft
from merger.train.perplexity import heldout_texts, perplexity
from merger.train.progress import MetricsLog, RichProgress, read_metrics

TRAINERS: dict[str, ModuleType] = {"pretrain": sft, "sft": sft, "dpo": dpo}
METRICS = "train_metrics.jsonl"


def history(model_dir: Path) -> list[TrainRun]:
    """The training steps a model folder went through, oldest first ([] for an untrained one)."""
    path = Path(model_dir) / HISTORY
    return TrainHistory.model_validate_json(path.read_text(encoding="utf-8")).root if path.exists() else []


def _work_dir(out: Path, model_dir: Path, kind: str, settings: TrainSettings, data_fingerprint: str) -> Path:
    """Same input, trainer, settings and data -> same work folder, so a rerun resumes from its checkpoints."""
    key = json.dumps([str(model_dir.resolve()), kind, settings.model_dump(), data_fingerprint], sort_keys=True)
    return out.parent / f".{out.name}.train-work-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def teacher_of(model_dir: Path, settings: TrainSettings) -> str | None:
    """Distillation's teacher: as given, else the model a depth up-scale was built from."""
    if not isinstance(settings, SFTSettings) or not settings.distill:
        return None
    teacher = settings.teacher or upscaled_from(model.mergekit_config(model_dir))
    if teacher is None:
        raise UserError.one(
            str(model_dir),
            "teacher",
            "distill needs a teacher: give `teacher:` (it defaults only for a depth up-scale)",
        )
    require_model_folder(Path(teacher))
    return teacher


def _inherit_card(model_dir: Path, out: Path, kinds: list[str]) -> None:
    """A trained model keeps its base's license and lineage (a merge's full card comes from `merger card`)."""
    base = front_matter(model_dir / "README.md")
    meta = {
        "license": base.get("license", "other"),
        "base_model": base.get("base_model", str(model_dir)),
        "tags": sorted({*kinds, "trl", "merger"}),
    }
    (out / "README.md").write_text(
        "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\n"
        f"{model_dir.name} trained by merger ({' -> '.join(kinds)}); see {HISTORY}.\n",
        encoding="utf-8",
    )


def _measure(trained, tokenizer, texts: list[str], max_length: int, cache: Path | None = None) -> tuple[float, int]:
    """Held-out perplexity; `cache` keeps the before-training figure across a resume."""
    if cache is not None and cache.exists():
        found = json.loads(cache.read_text())
        return found["perplexity"], found["tokens"]
    value, tokens = perplexity(trained, tokenizer, texts, max_length)
    if cache is not None:
        atomic_write(cache, json.dumps({"perplexity": value, "tokens": tokens}))
    return value, tokens


def train(
    model_dir: Path,
    kind: str,
    settings: TrainSettings,
    out: Path,
    references: dict[str, list[tuple[str, str]]],
    *,
    device: str = "auto",
    force: bool = False,
    show_progress: bool = True,
) -> TrainRun:
    """Train `model_dir` into `out` with the `kind` trainer; `references` are the eval items (task -> [(id, text)])
    checked for overlap with the training rows."""
    import torch
    from datasets import Dataset
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    trainer_module = TRAINERS[kind]
    model_dir, out = Path(model_dir), Path(out)
    require_model_folder(model_dir)
    ensure_target_free(out, force)
    device = resolve_device(device)
    model.check_device(settings, device)
    dtype = compute_dtype(device)
    teacher_dir = teacher_of(model_dir, settings)
    layers = model.resolve_layers(model_dir, settings, AutoConfig.from_pretrained(model_dir).num_hidden_layers)
    # read now: a bad file is one line before any training, not after it
    texts = heldout_texts(settings.heldout, settings.heldout_texts) if settings.heldout else None
    if device == "cuda":
        model.check_fits(model_dir, settings, dtype, Path(teacher_dir) if teacher_dir else None)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows, data, contamination = trainer_module.prepare(kind, settings, tokenizer, references)
    work = _work_dir(out, model_dir, kind, settings, data.fingerprint)
    work.mkdir(parents=True, exist_ok=True)

    student = model.load(model_dir, settings, device, dtype)
    cache = work / "perplexity_before.json"
    before = _measure(student, tokenizer, texts, settings.max_length, cache) if texts else None
    peft_config = model.adapt(student, settings, layers)
    teacher = None
    if teacher_dir is not None:
        teacher = AutoModelForCausalLM.from_pretrained(
            teacher_dir, dtype=dtype, device_map={"": 0} if device == "cuda" else None
        )
        if teacher.config.vocab_size != student.config.vocab_size:
            raise UserError.one(
                teacher_dir,
                "teacher",
                "its vocabulary differs from the model's; distil from a model with the same tokenizer",
            )
    args = dict(
        output_dir=str(work / "checkpoints"),
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps or -1,
        max_length=settings.max_length,
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
    callbacks = [MetricsLog(work / METRICS)] + ([RichProgress(kind)] if show_progress else [])
    trainer = trainer_module.trainer(
        student, tokenizer, Dataset.from_list(rows), settings, args, peft_config, callbacks, teacher
    )
    if device == "cuda":  # one GPU per run: several visible ones would make the Trainer wrap it in DataParallel
        trainer.args._n_gpu = 1
    if show_progress:
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; RichProgress shows them readably
    count = model.trainable(trainer.model)
    for partial in (work / "checkpoints").glob("checkpoint-*"):  # a kill while saving leaves one without its state
        if not (partial / "trainer_state.json").exists():
            shutil.rmtree(partial)
    checkpoints = [int(p.name.split("-")[1]) for p in (work / "checkpoints").glob("checkpoint-*")]
    result = trainer.train(resume_from_checkpoint=True if checkpoints else None)

    trained = model.merged_back(trainer, settings, model_dir, work, dtype)
    del teacher
    metrics = read_metrics(work / METRICS)
    measured = None
    if before is not None:
        after, tokens = _measure(trained, tokenizer, texts, settings.max_length)
        measured = Perplexity(source=settings.heldout, texts=len(texts), tokens=tokens, before=before[0], after=after)
    run = TrainRun(
        kind=kind,
        base_model=str(model_dir),
        settings=settings,
        learning_rate=settings.learning_rate,
        device=device,
        steps=trainer.state.global_step,
        resumed_from=max(checkpoints) if checkpoints else None,
        train_runtime=result.metrics.get("train_runtime"),
        trainable=count,
        layers=layers,
        teacher=teacher_dir,
        first_loss=metrics[0].loss if metrics else None,
        last_loss=metrics[-1].loss if metrics else None,
        data=data,
        decontamination=contamination,
        perplexity=measured,
    )
    steps = history(model_dir) + [run]
    with atomic_output_dir(out, replace=force) as tmp:
        trained.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for name in PROVENANCE:
            if (model_dir / name).exists():
                shutil.copyfile(model_dir / name, tmp / name)
        (tmp / METRICS).write_text(
            "".join(m.model_dump_json(exclude_none=True) + "\n" for m in metrics), encoding="utf-8"
        )
        (tmp / HISTORY).write_text(TrainHistory(steps).model_dump_json(indent=2) + "\n", encoding="utf-8")
        _inherit_card(model_dir, tmp, [s.kind for s in steps])
    shutil.rmtree(work, ignore_errors=True)
    return run
