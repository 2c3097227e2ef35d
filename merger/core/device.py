"""Where work runs, and in which precision."""

from __future__ import annotations

from merger.core.errors import UserError


def resolve_device(device: str) -> str:
    """'auto' means CUDA when present; asking for CUDA without one is a user error, not a crash."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError.one("--device", "", "cuda was asked for but no CUDA device is available")
    if device not in ("cpu", "cuda"):
        raise UserError.one("--device", "", f"'{device}' is not one of cpu, cuda, auto")
    return device


def compute_dtype(device: str):
    """float32 on a CPU (exact, and CPUs are rarely faster in half precision); bf16 on GPUs that have it."""
    import torch

    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32
