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


def release() -> None:
    """Give the CUDA allocator's cached blocks back (after an out-of-memory error, and after every sweep unit)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def compute_dtype(device: str):
    """float32 on a CPU (exact, and CPUs are rarely faster in half precision); bf16 on GPUs that have it natively
    (Ampere, compute capability 8.0, and later: `torch.cuda.is_bf16_supported()` also counts emulation, which T4,
    V100, 2080 Ti and P40 would run without tensor cores, and SDPA's memory-efficient kernel refuses bf16 below
    8.0), else float16 (trained with loss scaling)."""
    import torch

    if device == "cuda":
        return torch.bfloat16 if torch.cuda.get_device_capability() >= (8, 0) else torch.float16
    return torch.float32
