"""Hugging Face facts, each kept once: is this a model folder, is the hub offline, what a model is without
loading its weights (config, tokenizer, weight file format), what its card's front matter says, how big a shard is.

For hub models only the small JSON files are fetched (or read from the local cache when offline), so a
typo in a recipe fails in seconds instead of after gigabytes of downloads.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from merger.core.errors import UserError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*$", re.IGNORECASE)
UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def cache_root() -> Path:
    """merger's own cache: $MERGER_HOME, else ~/.cache/merger."""
    home = os.environ.get("MERGER_HOME")
    return Path(home) if home else Path.home() / ".cache" / "merger"


def pickled_files(folder: Path) -> list[str]:
    """Weight files that unpickle (and so can run code) when loaded."""
    return sorted(p.name for p in Path(folder).iterdir() if p.is_file() and p.name.endswith(PICKLE_SUFFIXES))


def is_model_folder(folder: Path | str) -> bool:
    """Whether `folder` holds a Hugging Face model (its config.json): a finished merge or step wrote it last."""
    return (Path(folder) / "config.json").exists()


def require_model_folder(folder: Path, *, weights: bool = True, tokenizer: bool = True) -> Path:
    """A Hugging Face model folder merger can load: config.json, safetensors weights, a tokenizer."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError.one(str(folder), "", "no such model folder")
    if not is_model_folder(folder):
        raise UserError.one(str(folder), "config.json", "missing: not a Hugging Face model folder")
    if weights and not list(folder.glob("*.safetensors")):
        pickled = pickled_files(folder)
        cause = f"only pickled weights ({', '.join(pickled)}); convert to safetensors" if pickled else "no weights"
        raise UserError.one(str(folder), "*.safetensors", cause)
    if tokenizer and not any((folder / name).exists() for name in TOKENIZER_FILES):
        raise UserError.one(str(folder), "tokenizer.json", "missing: the model folder has no tokenizer")
    return folder


def _card_parts(card: Path) -> tuple[str | None, str]:
    """(front matter text or None, the text after it) of a model card; (None, "") when there is no card."""
    if not card.exists():
        return None, ""
    text = card.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return None, text.strip()
    parts = text.split("---", 2)
    return parts[1], parts[2].strip() if len(parts) == 3 else text.strip()


def parameter_count(folder: Path) -> int:
    """Parameters in a folder's safetensors files, from their headers (no weights read)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(path, framework="pt") as handle:
            for name in handle.keys():
                shape = handle.get_slice(name).get_shape()
                total += functools.reduce(lambda a, b: a * b, shape, 1)
    return total


def front_matter(card: Path) -> dict[str, Any]:
    """The YAML front matter of a model card (README.md); {} when there is none or it is not YAML."""
    meta, _ = _card_parts(card)
    if meta is None:
        return {}
    try:
        data = yaml.safe_load(meta)
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def card_body(card: Path) -> str:
    """A model card's text after its front matter."""
    return _card_parts(card)[1]


def hub_card(ref: str) -> dict[str, Any]:
    """The front matter of a model's card, local or on the hub (cached when offline); {} when unreachable."""
    if os.path.isdir(ref):
        return front_matter(Path(ref) / "README.md")
    if HUB_ID.match(ref):
        try:
            from huggingface_hub import hf_hub_download

            return front_matter(Path(hf_hub_download(ref, "README.md", local_files_only=hub_offline())))
        except Exception:  # no card reachable: the caller treats what it says as unknown
            return {}
    return {}


def parse_size(text: str, flag: str = "--shard-size") -> int:
    """'5GB' -> 5_000_000_000 bytes, decimal units as the Hub's `max_shard_size` uses them."""
    match = SIZE.match(text)
    if not match:
        raise UserError.one(flag, "", f"'{text}' is not a size like 5GB or 500MB")
    return int(float(match.group(1)) * UNITS[match.group(2).upper()])


@dataclass(frozen=True)
class TokenizerInfo:
    special_tokens: dict[str, str]


@dataclass(frozen=True)
class ModelInfo:
    ref: str
    config: dict[str, Any]
    weight_files: tuple[str, ...]
    tokenizer: TokenizerInfo | None = None

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
    return TokenizerInfo(special_tokens=specials)


def _hub_files(repo: str, revision: str | None) -> tuple[dict[str, Path], tuple[str, ...]]:
    """Fetch (or find cached) the small files of a hub model, and list its weight files."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = hub_offline()
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
    elif HUB_ID.match(path) and not path.startswith((".", "/", "~")):
        files, weights = _hub_files(path, revision)
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
    return ModelInfo(ref=ref, config=config, weight_files=weights, tokenizer=tokenizer)


@dataclass(frozen=True)
class AdapterInfo:
    """A peft (LoRA) adapter, read from its adapter_config.json."""

    path: str
    base_model: str | None
    weight_files: tuple[str, ...]

    @property
    def pickle_only(self) -> bool:
        has_safe = any(f.endswith(".safetensors") for f in self.weight_files)
        return not has_safe and any(f.endswith(PICKLE_SUFFIXES) for f in self.weight_files)


@functools.lru_cache(maxsize=256)
def inspect_adapter(path: str, revision: str | None = None) -> AdapterInfo:
    """Raise LookupError with a one-line cause when the adapter can't be found or read."""
    if os.path.isdir(path):
        folder = Path(path)
        config_file = folder / "adapter_config.json"
        if not config_file.exists():
            raise LookupError(f"adapter folder '{path}' has no adapter_config.json")
        files = tuple(p.name for p in folder.iterdir())
    elif HUB_ID.match(path) and not path.startswith((".", "/", "~")):
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

        try:
            config_file = Path(
                hf_hub_download(path, "adapter_config.json", revision=revision, local_files_only=hub_offline())
            )
        except (RepositoryNotFoundError, EntryNotFoundError):
            raise LookupError(f"no LoRA adapter '{path}' on the Hugging Face hub") from None
        except LocalEntryNotFoundError:
            why = "HF_HUB_OFFLINE is set" if hub_offline() else "the hub could not be reached"
            raise LookupError(f"adapter '{path}' is not a local folder and not in the hub cache ({why})") from None
        files = tuple(p.name for p in config_file.parent.iterdir())
    else:
        raise LookupError(f"no such adapter folder '{path}'")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LookupError(f"adapter_config.json of '{path}' is not readable JSON: {exc}") from None
    return AdapterInfo(path=path, base_model=config.get("base_model_name_or_path"), weight_files=files)
