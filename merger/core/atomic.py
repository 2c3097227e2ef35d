"""Write-then-rename outputs, so a killed run never leaves a half-written folder or file at the target."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from merger.core.errors import UserError


def temp_dir_beside(target: Path) -> Path:
    """A fresh folder on the same filesystem as target, so the final rename is atomic."""
    return target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"


def ensure_target_free(out: Path, force: bool) -> None:
    """Refuse to replace a non-empty output folder unless asked to, before any work starts."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise UserError.one(str(out), "--out", "exists and is not empty; pass --force to replace it")


@contextlib.contextmanager
def atomic_output_dir(target: Path, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; on success it becomes `target`, on any failure it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.tmp-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = temp_dir_beside(target)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        if not replace and any(target.iterdir()):
            shutil.rmtree(tmp, ignore_errors=True)
            raise FileExistsError(target)
        old = temp_dir_beside(target)
        os.rename(target, old)
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, target)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write a file beside its target and rename it into place, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    os.replace(tmp, path)
