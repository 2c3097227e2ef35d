"""What a task is: how to build lm-eval's prompts from a doc, and how to score the model's answers.

Prompts follow lm-eval 0.4's plain-text rendering exactly: description, then each few-shot example as
`text + target_delimiter + answer + fewshot_delimiter`, then the doc's text; each choice is scored as the
continuation `target_delimiter + choice`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from merger.evaluate.data import Doc, load_hub, read_jsonl

TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"
FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed


@dataclass(frozen=True)
class HubSource:
    path: str
    name: str | None
    test_split: str
    fewshot_split: str | None
    revision: str | None = None


@dataclass
class Requests:
    """Log-likelihood requests for one doc: (context, continuation) per choice."""

    pairs: list[tuple[str, str]]


@dataclass
class Generation:
    """A greedy generation request for one doc."""

    context: str
    until: list[str]
    max_gen_toks: int = 256


class Task:
    name: ClassVar[str]
    title: ClassVar[str]  # the benchmark's name, for cards
    folder: ClassVar[str]  # sub-folder of the data dir, as in shared/evaldata
    default_fewshot: ClassVar[int]
    required: ClassVar[tuple[str, ...]] = ("id", "question", "choices", "answer")
    hub: ClassVar[HubSource | None] = None
    fewshot_sampler: ClassVar[str] = "default"  # or "first_n"
    # lm-eval draws k + 1 shots and drops the evaluated doc when the task's few-shot split equals its test
    # split, which includes tasks that set neither (HellaSwag, Winogrande): the RNG then advances differently.
    draws_extra_shot: ClassVar[bool] = False
    metrics: ClassVar[tuple[str, ...]] = ("acc", "acc_norm")
    primary: ClassVar[str] = "acc"  # what a sweep compares candidates on
    item_metric: ClassVar[dict[str, str]] = {}  # renames for the per-item records

    def __init__(self) -> None:
        self.rnd = random.Random(FEWSHOT_SEED)

    # --- data ---------------------------------------------------------------------------------
    def load(self, root: Path | None) -> tuple[list[Doc], list[Doc]]:
        """(test docs, few-shot pool); the pool may be empty."""
        if root is None:
            if self.hub is None:
                raise NotImplementedError
            test = load_hub(self.hub.path, self.hub.name, self.hub.test_split, self.from_hub, self.hub.revision)
            pool = (
                load_hub(self.hub.path, self.hub.name, self.hub.fewshot_split, self.from_hub, self.hub.revision)
                if self.hub.fewshot_split
                else []
            )
            return test, pool
        test = read_jsonl(root / self.folder / "test.jsonl", self.required)
        fewshot_path = root / self.folder / "fewshot.jsonl"
        pool = read_jsonl(fewshot_path, self.fewshot_required) if fewshot_path.exists() else []
        return test, pool

    @property
    def fewshot_required(self) -> tuple[str, ...]:
        return self.required

    def from_hub(self, row: dict[str, Any], index: int) -> Doc:
        raise NotImplementedError

    # --- prompts ------------------------------------------------------------------------------
    def description(self, doc: Doc) -> str:
        return ""

    def doc_to_text(self, doc: Doc) -> str:
        raise NotImplementedError

    def doc_to_choice(self, doc: Doc) -> list[str]:
        return list(doc["choices"])

    def gold(self, doc: Doc) -> int:
        return int(doc["answer"])

    def shots(self, doc: Doc, pool: list[Doc], k: int) -> list[Doc]:
        """Draw exactly as lm-eval's samplers do; the default one advances one RNG across docs in order."""
        if k == 0:
            return []
        if self.fewshot_sampler == "first_n":
            return pool[:k]
        if self.draws_extra_shot:
            return [shot for shot in self.rnd.sample(pool, k + 1) if shot != doc][:k]
        return self.rnd.sample(pool, k)

    def shot_text(self, shot: Doc) -> str:
        return self.doc_to_text(shot) + TARGET_DELIMITER + self.doc_to_choice(shot)[self.gold(shot)] + FEWSHOT_DELIMITER

    def context(self, doc: Doc, shots: list[Doc]) -> str:
        return self.description(doc) + "".join(self.shot_text(s) for s in shots) + self.doc_to_text(doc)

    def requests(self, doc: Doc, shots: list[Doc]) -> Requests | Generation:
        ctx = self.context(doc, shots)
        return Requests([(ctx, TARGET_DELIMITER + choice) for choice in self.doc_to_choice(doc)])

    # --- scoring ------------------------------------------------------------------------------
    def score(self, doc: Doc, lls: list[float]) -> dict[str, float]:
        """acc: argmax of log-likelihood; acc_norm: argmax of log-likelihood per character of the choice."""
        choices = self.doc_to_choice(doc)
        gold = self.gold(doc)
        best = max(range(len(lls)), key=lambda i: (lls[i], -i))
        best_norm = max(range(len(lls)), key=lambda i: (lls[i] / len(choices[i]), -i))
        result = {"acc": float(best == gold), "acc_norm": float(best_norm == gold)}
        return {m: result[m] for m in self.metrics}
