"""The task registry: one task per module, as lm-eval keeps one task per YAML."""

from merger.evaluate.tasks.arc import ArcChallenge
from merger.evaluate.tasks.arithmetic import Arithmetic
from merger.evaluate.tasks.base import Task
from merger.evaluate.tasks.gsm8k import GSM8K
from merger.evaluate.tasks.hellaswag import HellaSwag
from merger.evaluate.tasks.mmlu import MMLU
from merger.evaluate.tasks.truthfulqa import TruthfulQAMC2
from merger.evaluate.tasks.winogrande import Winogrande

TASKS: dict[str, type[Task]] = {
    t.name: t for t in (ArcChallenge, HellaSwag, MMLU, TruthfulQAMC2, Winogrande, GSM8K, Arithmetic)
}


def get_task(name: str) -> Task:
    """A fresh task object: each evaluation starts lm-eval's few-shot RNG anew."""
    return TASKS[name]()
