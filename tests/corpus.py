"""The mergekit config corpus (../shared/mergekit-configs) made runnable offline.

Each config's model ids (hub ids, Windows and Unix paths, `model+lora` pairs) are mapped to tiny local models of one
architecture family (named after the config's models: Gemma, Mixtral, Mistral, else Llama) and of the layer count
the config needs (the largest `layer_range` end it uses, else 8: whole-model merges need no particular depth); each
LoRA id to a tiny peft adapter of its base.
Nothing else in the config changes.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from conftest import EVALDATA
from tiny import make_tiny

CORPUS = EVALDATA.parent / "mergekit-configs"
KEYWORDS = ("union", "base")
# Whole-model merges need no particular depth; a few layers keep the corpus fast (the README's default is 32).
UNCONSTRAINED_LAYERS = 8


def configs() -> list[Path]:
    return sorted(CORPUS.glob("*.yaml"))


def _walk(node: Any, visit) -> Any:
    """Rebuild node, passing every (key, value) of every mapping through visit(key, value)."""
    if isinstance(node, dict):
        return {k: _walk(visit(k, v), visit) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, visit) for v in node]
    return node


def _is_model_key(key: str, value: Any) -> bool:
    return isinstance(value, str) and (
        key in ("model", "base_model") or (key == "tokenizer_source" and value not in KEYWORDS)
    )


def model_refs(config: dict) -> list[str]:
    found: list[str] = []

    def visit(key, value):
        if _is_model_key(key, value):
            found.append(value)
        return value

    _walk(config, visit)
    return found


def family(config: dict) -> str:
    names = " ".join(model_refs(config)).lower()
    if "gemma" in names:
        return "gemma2"
    if "mixtral" in names:
        return "mixtral"
    if re.search(r"mistral|nemo|\bmn-|/mn-|-12b", names):
        return "mistral"
    return "llama"


def _layer_needs(node: Any, needs: dict[str, int] | None = None) -> dict[str, int]:
    """Model -> the largest layer_range end the config uses it with."""
    needs = {} if needs is None else needs
    if isinstance(node, dict):
        if isinstance(node.get("model"), str) and isinstance(node.get("layer_range"), list):
            base = node["model"].split("+")[0]
            needs[base] = max(needs.get(base, 0), int(node["layer_range"][1]))
        for value in node.values():
            _layer_needs(value, needs)
    elif isinstance(node, list):
        for value in node:
            _layer_needs(value, needs)
    return needs


def localize(path: Path, root: Path, lora_base_for: dict[str, str] | None = None) -> dict:
    """The config with every model id replaced by a tiny local model (made under root, shared by name)."""
    from tiny import make_tiny_lora

    text = path.read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    arch = family(config)
    needs = _layer_needs(config)
    default_layers = max(needs.values(), default=UNCONSTRAINED_LAYERS)
    mapped: dict[str, str] = {}

    def local(name: str) -> str:
        if name in mapped:
            return mapped[name]
        prefix = "model:" if name.startswith("model:") else ""
        bare = name[len(prefix) :]
        if "+" in bare:
            base, lora = bare.split("+", 1)
            base_dir = local(base)
            adapter = root / f"lora-{_slug(lora)}"
            if not adapter.exists():
                make_tiny_lora(adapter, Path(base_dir), seed=len(mapped) + 100)
            mapped[name] = prefix + f"{base_dir}+{adapter}"
            return mapped[name]
        folder = root / f"{arch}-{needs.get(bare, default_layers)}-{_slug(bare)}"
        if not folder.exists():
            make_tiny(folder, arch, layers=needs.get(bare, default_layers), seed=len(mapped) + 1)
        mapped[name] = prefix + str(folder)
        return mapped[name]

    def visit(key, value):
        return local(value) if _is_model_key(key, value) else value

    return _walk(copy.deepcopy(config), visit)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", name.strip())[-60:]
