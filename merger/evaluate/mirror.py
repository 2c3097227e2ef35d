"""Task data without the hub: a local mirror in the Hugging Face layout, read by lm-eval's tasks unchanged.

`DIR/<owner>/<name>/<config or default>/<split>.jsonl`, rows in the dataset's own schema (as `datasets` writes them
with `to_json`). While `mirrored(DIR)` is active, every `datasets.load_dataset(path, name)` whose `path` is a folder
of DIR reads that folder's JSONL files instead (through the `datasets` JSON loader); everything else, such as a task
reading its own local files, loads as usual. Any task, built-in or the user's, is otherwise unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from merger.core.errors import UserError


def data_dir(explicit: str | Path | None) -> Path | None:
    """--data-dir wins, then $MERGER_DATA_DIR; None means 'load from the hub'."""
    chosen = explicit or os.environ.get("MERGER_DATA_DIR")
    return Path(chosen).expanduser() if chosen else None


def _mirror_class():
    import datasets

    class MirroredDatasets(datasets.DatasetDict):
        """The splits found in one mirrored folder. lm-eval touches a task's few-shot split when it builds the task,
        even for 0 shots, so a split the folder lacks reads as empty and is remembered: `require` then names the
        file that would hold it if the run needs its items."""

        folder: Path = Path()
        missing: set[str]

        def __getitem__(self, split):
            if isinstance(split, str) and split not in self.keys():
                self.missing.add(split)
                features = next(iter(self.values())).features
                return datasets.Dataset.from_dict({c: [] for c in features}, features=features)
            return super().__getitem__(split)

        def require(self, split: str | None, why: str) -> None:
            if split in self.missing:
                raise UserError.one(
                    str(self.folder / f"{split}.jsonl"),
                    "",
                    f"{why} reads split '{split}', which this data dir does not have "
                    f"(it has: {', '.join(sorted(self.keys()))})",
                )

    return MirroredDatasets


def require_splits(task, name: str) -> None:
    """One line naming the missing file when a task built from the mirror needs a split it lacks: its test items,
    or its few-shot pool when it takes shots from data."""
    dataset = getattr(task, "dataset", None)
    if not hasattr(dataset, "require"):
        return
    config = task.config
    dataset.require(config.test_split or config.validation_split, name)
    shots = config.num_fewshot or 0
    if shots > 0 and not getattr(config.fewshot_config, "samples", None):
        pool = config.fewshot_split or config.training_split or config.validation_split
        dataset.require(pool, f"{name} ({shots}-shot)")


def load_mirrored(root: Path, path: str, name: str | None, original, split: str | None = None):
    """The dataset `path`/`name` from the mirror at `root`, as a DatasetDict (or one split)."""
    folder = root / path / (name or "default")
    if not folder.is_dir():
        have = sorted(p.name for p in (root / path).iterdir() if p.is_dir())
        raise UserError.one(
            str(folder),
            "",
            f"{path} is mirrored but not its configuration '{name or 'default'}' (have: {', '.join(have)})",
        )
    files = {p.stem: str(p) for p in sorted(folder.glob("*.jsonl"))}
    if not files:
        raise UserError.one(str(folder), "", "no <split>.jsonl files here")
    loaded = original("json", data_files=files)
    out = _mirror_class()(loaded)
    out.folder, out.missing = folder, set()
    return out[split] if split else out


@contextmanager
def mirrored(root: Path | None) -> Iterator[None]:
    """Serve `datasets.load_dataset` from the mirror at `root` while active (nothing changes when root is None)."""
    if root is None:
        yield
        return
    if not root.is_dir():
        raise UserError.one(str(root), "--data-dir", "no such folder")
    import datasets

    original = datasets.load_dataset

    def load_dataset(path=None, name=None, *args, **kwargs):
        if isinstance(path, str) and "/" in path and (root / path).is_dir():
            return load_mirrored(root, path, name, original, kwargs.get("split"))
        hub_id = isinstance(path, str) and path.count("/") == 1 and not Path(path).exists()
        if hub_id and datasets.config.HF_HUB_OFFLINE:  # datasets' own flag: it would refuse this load
            raise UserError.one(
                str(root / path / (name or "default")),
                "",
                f"{path} is not in the data dir, and the hub is offline: mirror it here as <split>.jsonl files",
            )
        return original(path, name, *args, **kwargs)

    datasets.load_dataset = load_dataset
    try:
        yield
    finally:
        datasets.load_dataset = original
