"""What a training run shows and keeps: a rich progress line with the loss (and DPO's reward accuracy and margin,
or distillation's two terms), and a
JSONL of every logging step that survives interruption (a resumed run appends; readers keep the last
record of each step)."""

from __future__ import annotations

from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from transformers import TrainerCallback

from merger.config.results import TrainLogRecord
from merger.config.train import LABELS


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
    def __init__(self, kind: str) -> None:
        self.progress = Progress(
            TextColumn(LABELS[kind]),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
        )
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.progress.start()
        self.bar = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, status="")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs and "loss" in logs:
            status = f"loss {logs['loss']:.4f}"
            for key, name in (
                ("rewards/accuracies", "reward acc"),
                ("rewards/margins", "margin"),
                ("ce", "CE"),
                ("kl", "KL"),
                ("mean_token_accuracy", "token acc"),
            ):
                if key in logs:
                    status += f"  {name} {logs[key]:.3f}"
            self.progress.update(self.bar, completed=state.global_step, status=status)

    def on_train_end(self, args, state, control, **kwargs):
        self.progress.stop()
