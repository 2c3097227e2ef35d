"""Task names are lm-eval's: any task, group or tag it ships, the user's own task folders, and two presets.

Only the folders a run needs are indexed: a name is looked up in a map of every name lm-eval lists (built once per
lm-eval version from lm-eval's own task index, then cached), and lm-eval's `TaskManager` indexes just the top-level
folders holding them, plus the user's `include_path` and merger's own task folder (~0.1 s instead of the ~17 s a
full index takes).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path

from merger.core.atomic import atomic_write
from merger.core.errors import UserError
from merger.core.hf import cache_root

OWN_TASKS = Path(__file__).parent / "lm_tasks"  # merger's own task YAMLs (the data-free demo task)


@dataclass(frozen=True)
class Protocol:
    """How a benchmark is scored by a preset: its shots and headline metric (lm-eval's key)."""

    task: str
    num_fewshot: int | None
    metric: str
    title: str


# openllm-v1 (legacy): the six tasks and settings of the archived Open LLM Leaderboard, as the Sakura-SOLAR card gives.
# openllm-v2: lm-eval's `leaderboard` group, one entry per family, with the shots its task YAMLs set.
PRESETS: dict[str, list[Protocol]] = {
    "openllm-v1": [
        Protocol("arc_challenge", 25, "acc_norm,none", "AI2 Reasoning Challenge"),
        Protocol("hellaswag", 10, "acc_norm,none", "HellaSwag"),
        Protocol("mmlu", 5, "acc,none", "MMLU"),
        Protocol("truthfulqa_mc2", 0, "acc,none", "TruthfulQA"),
        Protocol("winogrande", 5, "acc,none", "Winogrande"),
        Protocol("gsm8k", 5, "exact_match,strict-match", "GSM8k"),
    ],
    "openllm-v2": [
        Protocol("leaderboard_ifeval", 0, "prompt_level_strict_acc,none", "IFEval"),
        Protocol("leaderboard_bbh", 3, "acc_norm,none", "BBH"),
        Protocol("leaderboard_math_hard", 4, "exact_match,none", "MATH Lvl 5"),
        Protocol("leaderboard_gpqa", 0, "acc_norm,none", "GPQA"),
        Protocol("leaderboard_musr", 0, "acc_norm,none", "MuSR"),
        Protocol("leaderboard_mmlu_pro", 5, "acc,none", "MMLU-PRO"),
    ],
}
PROTOCOLS = {p.task: (preset, p) for preset, protocols in PRESETS.items() for p in protocols}


def expand(names: list[str]) -> list[str]:
    """Task names with presets replaced by their tasks, in order, each once."""
    out: list[str] = []
    for name in names:
        out += [p.task for p in PRESETS[name]] if name in PRESETS else [name]
    return list(dict.fromkeys(out))


def builtin_root() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks"


def _indexed(folders: list[Path]) -> dict:
    """lm-eval's own index of task YAMLs (its `TaskIndex`, what `TaskManager` builds): name -> entry."""
    from lm_eval.tasks._index import TaskIndex

    return TaskIndex.build(folders)


def _top(path: Path | None, root: Path) -> str | None:
    if path is None:
        return None
    parts = Path(path).relative_to(root).parts
    return "" if len(parts) == 1 else parts[0]


def name_index() -> dict[str, list[str]]:
    """Every task, group and tag name lm-eval lists -> the top-level task folders holding it (a tag: those of its
    tasks). Built once per lm-eval version from lm-eval's own index (~17 s), then cached."""
    import lm_eval

    version = getattr(lm_eval, "__version__", "unknown")
    cached = cache_root() / "lm-eval" / f"index-{version}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    root = builtin_root()
    entries = _indexed([root])
    index = {name: {_top(e.yaml_path, root)} - {None} for name, e in entries.items()}
    for name, e in entries.items():
        if e.yaml_path is None:  # a tag: the folders of its tasks
            index[name] = {f for task in e.tags for f in index.get(task, ())}
    result = {name: sorted(folders) for name, folders in index.items()}
    atomic_write(cached, json.dumps(result))
    return result


def own_names(paths: list[Path]) -> set[str]:
    """The task, group and tag names in the user's task folders (and merger's), as lm-eval indexes them."""
    return set(_indexed(paths))


def include_paths(include_path: list[str], file: str = "--include-path", field: str = "") -> list[Path]:
    """merger's own task folder and the user's, each checked to be a folder."""
    paths = []
    for entry in include_path:
        path = Path(entry).expanduser()
        if not path.is_dir():
            raise UserError.one(file, field, f"'{entry}' is not a folder of task YAMLs")
        paths.append(path)
    return [OWN_TASKS, *paths]


def check_names(names: list[str], include_path: list[str], file: str = "--tasks", field: str = "") -> list[str]:
    """The names, each a preset or a task, group or tag lm-eval or the include path declares; else one line."""
    if not names:
        raise UserError.one(file, field, "no task named")
    where = f"{field.rsplit('.', 1)[0]}.include_path" if field else "--include-path"
    known = own_names(include_paths(include_path, file, where)) | set(name_index())
    for name in names:
        if name not in known and name not in PRESETS:
            near = difflib.get_close_matches(name, [*PRESETS, *known], n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise UserError.one(
                file, field, f"unknown task '{name}': no lm-eval task, group or tag, nor preset, has that name{hint}"
            )
    return names


def task_manager(names: list[str], include_path: list[str]):
    """lm-eval's TaskManager over only the folders these names need."""
    from lm_eval.tasks import TaskManager

    index, root = name_index(), builtin_root()
    folders = sorted({f for n in expand(names) for f in index.get(n, [])})
    paths = [root / f if f else root for f in folders if f] + include_paths(include_path)
    return TaskManager(include_defaults=False, include_path=[str(p) for p in paths])
