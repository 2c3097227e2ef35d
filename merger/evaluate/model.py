"""Loading a model folder for scoring: safetensors only, no custom code, the right dtype for the device."""

from __future__ import annotations

from pathlib import Path

from merger.device import compute_dtype, resolve_device
from merger.errors import UserError


def load_model(folder: str | Path, device: str = "auto"):
    """(model, tokenizer); refuses folders without safetensors weights rather than unpickling anything."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError.one(str(folder), "", "no such model folder")
    if not (folder / "config.json").exists():
        raise UserError.one(str(folder), "config.json", "missing: not a Hugging Face model folder")
    if not list(folder.glob("*.safetensors")):
        pickled = [p.name for p in folder.glob("*.bin")]
        cause = "only pickled weights (" + ", ".join(pickled) + "); convert to safetensors" if pickled else "no weights"
        raise UserError.one(str(folder), "*.safetensors", cause)
    if not any((folder / name).exists() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise UserError.one(str(folder), "tokenizer.json", "missing: the folder has no tokenizer")
    device = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=compute_dtype(device)).to(device).eval()
    return model, tokenizer
