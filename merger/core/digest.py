"""What a model's weights are, as one digest: equal digests, equal weights (names, dtypes, shapes and bytes)."""

from __future__ import annotations

from pathlib import Path


def _digest(named_tensors) -> str:
    """SHA-256 over (name, tensor) pairs given in name order: each name, dtype, shape and bytes."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in named_tensors:
        tensor = tensor.contiguous().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(memoryview(tensor.view(-1).view(torch.uint8).numpy()))  # no copy of the bytes
    return digest.hexdigest()


def tensor_digest(tensors: dict) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order: equal digests, equal weights."""
    return _digest((name, tensors[name]) for name in sorted(tensors))


def folder_digest(folder: Path) -> str:
    """`tensor_digest` of every tensor in a folder's safetensors files, read one tensor at a time."""
    from safetensors import safe_open

    where: dict[str, Path] = {}
    for path in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(path, framework="pt") as handle:
            where.update(dict.fromkeys(handle.keys(), path))

    def tensors():
        for name in sorted(where):
            with safe_open(where[name], framework="pt") as handle:
                yield name, handle.get_tensor(name)

    return _digest(tensors())
