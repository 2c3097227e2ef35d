"""Loading a model folder for scoring: safetensors only, no custom code, the right dtype for the device."""

from __future__ import annotations

from pathlib import Path

from merger.core.device import compute_dtype, resolve_device
from merger.core.hf import require_model_folder


def load_model(folder: str | Path, device: str = "auto"):
    """(model, tokenizer); refuses folders without safetensors weights rather than unpickling anything."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = require_model_folder(Path(folder))
    device = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(  # straight onto the device: no second copy in host RAM
        folder, dtype=compute_dtype(device), device_map=device, attn_implementation="sdpa"
    ).eval()
    return model, tokenizer
