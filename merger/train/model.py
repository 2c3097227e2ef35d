"""What every trainer shares about the model: the fit check, loading (4-bit for QLoRA), LoRA or the layers trained,
and merging the adapters back into plain weights. The trainers (`sft.py`, `dpo.py`) add only their data and trl's
trainer."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import yaml

from merger.config.train import TrainSettings, inserted_layers, layer_list
from merger.core.errors import UserError

LAYER = re.compile(r"\.layers\.(\d+)\.")


def check_device(settings: TrainSettings, device: str) -> None:
    if settings.qlora and importlib.util.find_spec("bitsandbytes") is None:
        raise UserError.one("train", "qlora", "4-bit QLoRA needs bitsandbytes: pip install 'merger[qlora]'")
    if settings.qlora and (device != "cuda" or settings.full):
        raise UserError.one("train", "qlora", "4-bit QLoRA needs a CUDA device and LoRA (not --full)")


def check_fits(model_dir: Path, settings: TrainSettings, dtype, extra: Path | None = None) -> None:
    """One line, before any loading, when the weights cannot fit the GPU as asked: LoRA holds the weights once in
    the compute dtype (QLoRA a quarter of that), full fine-tuning about four times (weights, gradients, Adam);
    `extra` is a second model held beside them (a distillation teacher)."""
    import torch

    from merger.core.hf import parameter_count

    size = parameter_count(model_dir) * torch.finfo(dtype).bits // 8
    need = size // 4 if settings.qlora else (4 * size if settings.full else size)
    need += parameter_count(extra) * torch.finfo(dtype).bits // 8 if extra is not None else 0
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


def mergekit_config(model_dir: Path) -> dict:
    """The mergekit config a model folder was merged with (mergekit writes it, and trained outputs carry it)."""
    path = Path(model_dir) / "mergekit_config.yml"
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else {}


def resolve_layers(model_dir: Path, settings: TrainSettings, num_layers: int) -> list[int] | None:
    """The decoder layers to train: None for all; 'inserted' reads them from the model's mergekit config."""
    if settings.layers is None:
        return None
    if settings.layers == "inserted":
        layers = inserted_layers(mergekit_config(model_dir))
        if not layers:
            raise UserError.one(
                str(model_dir),
                "layers",
                "'inserted' needs a depth up-scaled model (a passthrough mergekit_config.yml that repeats layers)",
            )
    else:
        layers = layer_list(settings.layers)
    if layers[-1] >= num_layers:
        raise UserError.one(str(model_dir), "layers", f"layer {layers[-1]} does not exist (the model has {num_layers})")
    return layers


def load(model_dir: Path, settings: TrainSettings, device: str, dtype):
    """The model to train, in `dtype` (float32 master weights for full fine-tuning in fp16), 4-bit for QLoRA."""
    import torch
    from transformers import AutoModelForCausalLM

    quantization = None
    if settings.qlora:
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    master = torch.float32 if settings.full and dtype == torch.float16 else dtype
    return AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=master, quantization_config=quantization, device_map={"": 0} if device == "cuda" else None
    )


def adapt(model, settings: TrainSettings, layers: list[int] | None):
    """LoRA's config for the trainer (on `layers` only, when given); with full fine-tuning and `layers`, every other
    parameter is frozen here and None is returned."""
    if settings.full:
        if layers is not None:
            keep = set(layers)
            for name, parameter in model.named_parameters():
                found = LAYER.search(name)
                parameter.requires_grad = bool(found) and int(found.group(1)) in keep
        return None
    import torch
    from peft import LoraConfig

    targets = settings.target_modules
    if layers is not None and isinstance(targets, str):  # peft takes layers only with module names: all-linear's
        if targets != "all-linear":
            raise UserError.one("train", "target_modules", "with `layers`, give module names (or all-linear)")
        targets = sorted(
            {
                name.rsplit(".", 1)[-1]
                for name, module in model.named_modules()
                if isinstance(module, torch.nn.Linear) and LAYER.search(name + ".")
            }
        )
    return LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=targets,
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def merged_back(trainer, settings: TrainSettings, model_dir: Path, work: Path, dtype):
    """The trained model as plain weights: LoRA merged into the base (for QLoRA, into a full-precision base)."""
    trained = trainer.model
    if settings.qlora:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        trained.save_pretrained(work / "adapter")
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        trained = PeftModel.from_pretrained(base, work / "adapter")
    return trained if settings.full else trained.merge_and_unload()
