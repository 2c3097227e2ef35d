"""What a training run shows and keeps: a rich progress line with loss, reward accuracy and margin, and a
JSONL of every logging step that survives interruption (a resumed run appends; readers keep the last
record of each step)."""

from __future__ import annotations

from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from transformers import TrainerCallback

from merger.config.results import TrainLogRecord


class MetricsLog(TrainerCallback):
    def __init__(self, path: Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            record = TrainLogRecord.model_validate({"step": state.global_step, **logs})
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(record.model_dump_json(exclude_none=True) + "\n")


def read_metrics(path: Path) -> list[TrainLogRecord]:
    """Every step once: a resumed run appends, and the last record of a step wins."""
    if not Path(path).exists():
        return []
    by_step: dict[int, TrainLogRecord] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = TrainLogRecord.model_validate_json(line)
            by_step[record.step] = record
    return [by_step[s] for s in sorted(by_step)]


class RichProgress(TrainerCallback):
    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("DPO"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
        )
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.progress.start()
        self.bar = self.progress.add_task("dpo", total=state.max_steps, completed=state.global_step, status="")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs and "loss" in logs:
            status = (
                f"loss {logs['loss']:.4f}  reward acc {logs.get('rewards/accuracies', float('nan')):.2f}  "
                f"margin {logs.get('rewards/margins', float('nan')):.3f}"
            )
            self.progress.update(self.bar, completed=state.global_step, status=status)

    def on_train_end(self, args, state, control, **kwargs):
        self.progress.stop()
