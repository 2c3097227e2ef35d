"""lm-eval as the reference: its built-in task configs, fed the same items merger scores.

Each local task YAML `include`s lm-eval's own built-in one and overrides only where the data comes from
(local JSONL in the Hugging Face schema that the built-in task expects), so prompts, few-shot sampling and
metrics are lm-eval's. Used by tests/test_eval_agreement.py and scripts/bench_eval.py, bench_sweep.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lm_eval
import yaml

TASKS_DIR = Path(lm_eval.__file__).parent / "tasks"


def _write(path: Path, docs: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    return str(path)


def _arc(doc: dict) -> dict:
    return {
        "id": doc["id"],
        "question": doc["question"],
        "answerKey": doc["answerKey"],
        "choices": {"text": doc["choices"], "label": doc["choice_labels"]},
    }


def _winogrande(doc: dict) -> dict:
    return {**doc, "answer": str(doc["answer"] + 1)}


def write_tasks(folder: Path, task: str, docs: list[dict], pool: list[dict]) -> list[str]:
    """Write data files and task YAMLs for one merger task; returns the lm-eval task names to run."""
    folder.mkdir(parents=True, exist_ok=True)
    specs: list[tuple[str, Path, dict]] = []
    if task == "arc_challenge":
        files = {
            "test": _write(folder / "arc_test.jsonl", [_arc(d) for d in docs]),
            "train": _write(folder / "arc_train.jsonl", [_arc(d) for d in pool]),
        }
        specs.append(("ref_arc_challenge", TASKS_DIR / "arc" / "arc_challenge.yaml", {"data_files": files}))
    elif task == "hellaswag":
        files = {"validation": _write(folder / "hs_val.jsonl", docs), "train": _write(folder / "hs_train.jsonl", pool)}
        specs.append(("ref_hellaswag", TASKS_DIR / "hellaswag" / "hellaswag.yaml", {"data_files": files}))
    elif task == "truthfulqa_mc2":
        files = {"validation": _write(folder / "tqa_val.jsonl", docs)}
        specs.append(("ref_truthfulqa_mc2", TASKS_DIR / "truthfulqa" / "truthfulqa_mc2.yaml", {"data_files": files}))
    elif task == "winogrande":
        files = {"validation": _write(folder / "wg_val.jsonl", [_winogrande(d) for d in docs])}
        if pool:
            files["train"] = _write(folder / "wg_train.jsonl", [_winogrande(d) for d in pool])
        specs.append(
            (
                "ref_winogrande",
                TASKS_DIR / "winogrande" / "default.yaml",
                {"data_files": files, **({} if pool else {"training_split": None})},
            )
        )
    elif task == "mmlu":
        for subject in dict.fromkeys(d["subject"] for d in docs):
            files = {
                "test": _write(folder / f"mmlu_{subject}_test.jsonl", [d for d in docs if d["subject"] == subject]),
                "dev": _write(folder / f"mmlu_{subject}_dev.jsonl", [d for d in pool if d["subject"] == subject]),
            }
            specs.append(
                (f"ref_mmlu_{subject}", TASKS_DIR / "mmlu" / "default" / f"mmlu_{subject}.yaml", {"data_files": files})
            )
    else:
        raise ValueError(f"no lm-eval reference for {task}")
    names = []
    for name, builtin, override in specs:
        config = {
            "include": str(builtin),
            "task": name,
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": override["data_files"]},
        }
        config.update({k: v for k, v in override.items() if k != "data_files"})
        config.pop("tag", None)
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        names.append(name)
    return names


def run_reference(
    model,
    tokenizer,
    task: str,
    docs: list[dict],
    pool: list[dict],
    num_fewshot: int,
    workdir: Path,
    batch_size: int = 1,
) -> tuple[dict[str, dict], float]:
    """Per-item lm-eval results keyed by item id ({"lls", "acc", "acc_norm"?}), and the seconds it took."""
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    names = write_tasks(workdir / task, task, docs, pool)
    manager = TaskManager(include_path=str(workdir / task), include_defaults=False)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    started = time.perf_counter()
    out = lm_eval.simple_evaluate(
        model=lm, tasks=names, num_fewshot=num_fewshot, task_manager=manager, log_samples=True, verbosity="ERROR"
    )
    seconds = time.perf_counter() - started
    items: dict[str, dict] = {}
    for name in names:
        for sample in out["samples"][name]:
            doc = sample["doc"]
            record = {"lls": [float(r[0][0]) for r in sample["resps"]], "acc": float(sample["acc"])}
            if "acc_norm" in sample:
                record["acc_norm"] = float(sample["acc_norm"])
            record["arguments"] = [list(a) for a in sample["arguments"]] if "arguments" in sample else None
            items[str(doc.get("id"))] = record
    return items, seconds
