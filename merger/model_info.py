"""What we know about an input model without loading its weights: config, tokenizer, weight file format.

For hub models only the small JSON files are fetched (or read from the local cache when offline), so a
typo in a recipe fails in seconds instead of after gigabytes of downloads.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")


@dataclass(frozen=True)
class TokenizerInfo:
    vocab_size: int
    special_tokens: dict[str, str]


@dataclass(frozen=True)
class ModelInfo:
    ref: str
    local: bool
    config: dict[str, Any]
    weight_files: tuple[str, ...]
    tokenizer: TokenizerInfo | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or [self.config.get("model_type", "?")]
        return str(archs[0])

    @property
    def num_layers(self) -> int:
        value = self.config.get("num_hidden_layers") or self.config.get("text_config", {}).get("num_hidden_layers")
        if not isinstance(value, int):
            raise LookupError(f"{self.ref}: config.json has no num_hidden_layers")
        return value

    @property
    def tied_embeddings(self) -> bool:
        return bool(self.config.get("tie_word_embeddings", False))

    @property
    def pickle_only(self) -> bool:
        """True when the model has pickled weights and no safetensors: loading it can run arbitrary code."""
        has_safe = any(f.endswith(".safetensors") for f in self.weight_files)
        has_pickle = any(f.endswith(PICKLE_SUFFIXES) for f in self.weight_files)
        return has_pickle and not has_safe

    @property
    def needs_remote_code(self) -> bool:
        return "auto_map" in self.config


def model_path(ref: str) -> str:
    """The model part of a mergekit reference (`path+lora@revision` forms allowed)."""
    from mergekit.common import ModelReference

    return ModelReference.model_validate(ref).model.path


def _read_tokenizer(files: dict[str, Path]) -> TokenizerInfo | None:
    if "tokenizer.json" not in files and "tokenizer_config.json" not in files:
        return None
    config: dict[str, Any] = {}
    if "tokenizer_config.json" in files:
        config = json.loads(files["tokenizer_config.json"].read_text(encoding="utf-8"))
    specials = {}
    for key in SPECIAL_KEYS:
        value = config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if value:
            specials[key] = str(value)
    vocab = 0
    if "tokenizer.json" in files:
        from tokenizers import Tokenizer

        vocab = Tokenizer.from_file(str(files["tokenizer.json"])).get_vocab_size(with_added_tokens=True)
    return TokenizerInfo(vocab_size=vocab, special_tokens=specials)


def _hub_files(repo: str, revision: str | None) -> tuple[dict[str, Path], tuple[str, ...]]:
    """Fetch (or find cached) the small files of a hub model, and list its weight files."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    files: dict[str, Path] = {}
    for name in ("config.json", "tokenizer_config.json", "tokenizer.json"):
        try:
            files[name] = Path(hf_hub_download(repo, name, revision=revision, local_files_only=offline))
        except (RepositoryNotFoundError, RevisionNotFoundError):
            raise LookupError(f"no model '{repo}' on the Hugging Face hub (or it is private)") from None
        except LocalEntryNotFoundError:
            if name == "config.json":
                why = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached"
                raise LookupError(f"'{repo}' is not a local folder and not in the hub cache ({why})") from None
        except EntryNotFoundError:
            if name == "config.json":
                raise LookupError(f"hub model '{repo}' has no config.json") from None
    if offline:
        snapshot = files["config.json"].parent
        weights = tuple(p.name for p in snapshot.iterdir())
    else:
        weights = tuple(HfApi().list_repo_files(repo, revision=revision))
    return files, weights


@functools.lru_cache(maxsize=256)
def inspect_model(ref: str) -> ModelInfo:
    """Raise LookupError with a one-line cause when the model can't be found or read."""
    from mergekit.common import ModelReference

    reference = ModelReference.model_validate(ref)
    path, revision = reference.model.path, reference.model.revision
    if os.path.isdir(path):
        folder = Path(path)
        files = {p.name: p for p in folder.iterdir() if p.is_file()}
        if "config.json" not in files:
            raise LookupError(f"folder '{path}' has no config.json")
        weights = tuple(files)
        local = True
    elif HUB_ID.match(path) and not path.startswith((".", "/", "~")):
        files, weights = _hub_files(path, revision)
        local = False
    else:
        raise LookupError(f"no such model folder '{path}'")
    try:
        config = json.loads(files["config.json"].read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LookupError(f"config.json of '{path}' is not readable JSON: {exc}") from None
    try:
        tokenizer = _read_tokenizer(files)
    except (OSError, ValueError, Exception) as exc:  # tokenizers raises its own Exception type
        raise LookupError(f"tokenizer of '{path}' is not readable: {str(exc).splitlines()[0]}") from None
    return ModelInfo(ref=ref, local=local, config=config, weight_files=weights, tokenizer=tokenizer)
