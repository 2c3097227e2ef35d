"""Where a model gets scored: lm-eval's tasks and evaluator, a model backend (merger's by default), per-task scores
and per-item records out.

Each requested name (a task, a group, a tag, or a preset's entry) is one lm-eval run over its tasks, on a seeded
subset of its items passed as lm-eval's `samples`: the same items for every model, nested as the limit grows, and
disjoint for different offsets. A group's score is the size-weighted mean of its tasks (lm-eval's aggregation for
`mmlu` and the `leaderboard_*` groups), which is also the mean over its items.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from contextlib import nullcontext
from importlib.metadata import version
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from merger.config.recipe import EvalSettings
from merger.config.results import EvalReport, ItemRecord, TaskScore
from merger.core.errors import UserError
from merger.evaluate.cache import ItemCache, Scored, cacheable, runtime, task_key
from merger.evaluate.mirror import data_dir, mirrored, require_splits
from merger.evaluate.punkt import ensure_punkt_tab
from merger.evaluate.signals import gold_indices, p_gold
from merger.evaluate.tasks import PRESETS, PROTOCOLS, check_names, expand, task_manager

BOOTSTRAP_ITERS = 1000  # lm-eval bootstraps the stderr of metrics whose aggregation is not a mean


def sample_indices(n_items: int, limit: int | None, seed: int, offset: int = 0) -> list[int]:
    """Positions [offset, offset + limit) of one seeded shuffle of the items, in that order: the same items for
    every model, so candidates compare item by item; `offset` gives disjoint subsets (selection vs reporting) and a
    growing `limit` nested ones (racing scores only the new items). An item's place in this order is its position,
    so the first n positions of a task are a seeded sample of it, however they were scored."""
    order = random.Random(seed).sample(range(n_items), n_items)
    return order[offset : offset + limit if limit is not None else None]


def stderr(values: list[float]) -> float:
    """lm-eval's mean_stderr: sample standard deviation over sqrt(n)."""
    n = len(values)
    if n < 2:
        return float("nan")
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) / math.sqrt(n)


def shots_for(name: str, settings: EvalSettings) -> int | None:
    """--num-fewshot for this task (all tasks, or per task), else the preset's, else None (the task's own)."""
    given = settings.num_fewshot
    if isinstance(given, dict):
        given = given.get(name)
    if given is None and name in PROTOCOLS and any(n in PRESETS for n in settings.tasks):
        given = PROTOCOLS[name][1].num_fewshot
    return given


def _build(manager, name: str) -> dict[str, Any]:
    try:
        return manager.load([name])["tasks"]
    except KeyError:  # a group naming a task outside the folders indexed: index them all
        from lm_eval.tasks import TaskManager

        return TaskManager(include_path=[str(p) for p in manager.include_path]).load([name])["tasks"]


def load_tasks(names: list[str], settings: EvalSettings) -> dict[str, dict[str, Any]]:
    """name -> its lm-eval tasks (leaf name -> Task), built with their data read; shots and seeds set."""
    manager = task_manager(names, settings.include_path)
    loaded = {}
    for name in names:
        try:
            leaves = _build(manager, name)
        except UserError:
            raise
        except Exception as exc:  # datasets and lm-eval raise many types, all meaning 'cannot load this here'
            cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            hint = "; offline, give --data-dir with a local mirror of its dataset" if "offline" in cause.lower() else ""
            raise UserError.one(name, "", f"lm-eval could not load this task: {cause}{hint}") from None
        k = shots_for(name, settings)
        for task in leaves.values():
            if k is not None and task.get_config("num_fewshot") != 0:
                task.set_config(key="num_fewshot", value=k)
            elif task.get_config("num_fewshot") is None:
                task.set_config(key="num_fewshot", value=0)
            task.set_fewshot_seed(seed=settings.fewshot_seed)
            if settings.gen_kwargs and task.get_config("output_type") == "generate_until":
                task.set_config(key="generation_kwargs", value=dict(settings.gen_kwargs), update=True)
            require_splits(task, name)
        loaded[name] = leaves
    return loaded


def _split(task) -> str | None:
    return task.config.test_split if task.has_test_docs() else task.config.validation_split


def _number(value: Any) -> float | None:
    if isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, list | tuple) and value and all(isinstance(v, bool | int | float) for v in value):
        return sum(float(v) for v in value) / len(value)  # per-instruction results (IFEval's inst_level_*)
    return None


def _items(name: str, tasks: dict[str, Any], samples: dict[str, list[dict]], primary: str) -> dict[tuple, ItemRecord]:
    """One record per document, by (leaf task, document index), from lm-eval's logged samples (one sample per
    filter): every metric as `metric,filter`, the choices' log-likelihoods or the generation, and for a
    multiple-choice document its gold choices and selection signal (`signals.py`), read from the document itself."""
    records: dict[tuple[str, int], ItemRecord] = {}
    for leaf, task in tasks.items():
        for sample in samples.get(leaf, []):
            key = (leaf, int(sample["doc_id"]))
            record = records.get(key)
            if record is None:
                record = records[key] = ItemRecord(
                    task=name, id=_item_id(name, tasks, *key), doc_id=key[1], primary=primary
                )
                resps = sample.get("resps") or []
                if resps and isinstance(resps[0][0], tuple | list):
                    record.lls = [float(r[0][0]) for r in resps]
                elif resps and isinstance(resps[0][0], str):
                    record.generation = resps[0][0]
                elif resps and isinstance(resps[0][0], float):
                    record.lls = [float(r[0]) for r in resps]
                if record.lls is not None and task.get_config("output_type") == "multiple_choice":
                    choices = task.doc_to_choice(sample["doc"])
                    record.gold = gold_indices(task, sample["doc"], choices)
                    if record.gold is not None:
                        record.signal = p_gold(record.lls, choices, record.gold, primary)
            for metric in sample.get("metrics", []):
                value = _number(sample.get(metric))
                if value is not None:
                    record.metrics[f"{metric},{sample.get('filter', 'none')}"] = value
    return records


def _item_id(name: str, tasks: dict[str, Any], leaf: str, doc: int) -> str:
    return str(doc) if list(tasks) == [name] else f"{leaf}/{doc}"


def doc_keys(tasks: dict[str, Any], chosen: list[tuple]) -> dict[tuple, str]:
    """Each chosen item's name in the per-item cache. lm-eval draws a document's few-shot examples from one seeded
    sampler in turn for the documents of a run (sorted), so with shots a record holds only for the same run's
    documents: its name carries them (a hash of the leaf's documents in the run); 0-shot, the document alone."""
    runs = {}
    for leaf, task in tasks.items():
        docs = sorted(d for t, d in chosen if t == leaf)
        if task.get_config("num_fewshot"):
            runs[leaf] = "@" + hashlib.sha256(json.dumps(docs).encode()).hexdigest()[:16]
    return {(leaf, doc): f"{leaf}/{doc}{runs.get(leaf, '')}" for leaf, doc in chosen}


def _cached(cache, model, key, name: str, tasks: dict[str, Any], stored: dict[tuple, str]) -> dict[tuple, ItemRecord]:
    """The chosen items the cache holds for this model and task (`key`: None, no cache; `stored`: each chosen item's
    name in the cache, `doc_keys`), as this run names them."""
    if not key:
        return {}
    found = cache.get(model.key, key, list(stored.values()))
    records = {}
    for leaf, doc in stored:
        record = found.get(stored[(leaf, doc)])
        if record is not None:
            records[(leaf, doc)] = record.model_copy(update={"task": name, "id": _item_id(name, tasks, leaf, doc)})
    return records


def _means(records: list[ItemRecord]) -> dict[str, float]:
    """A leaf task's lm-eval results from its items, for metrics aggregated by their mean: each metric's mean and
    lm-eval's `mean_stderr`, keyed as lm-eval keys them."""
    results: dict[str, float] = {}
    for metric in dict.fromkeys(k for r in records for k in r.metrics):
        values = [r.metrics[metric] for r in records if metric in r.metrics]
        results[metric] = sum(values) / len(values)
        results[metric.replace(",", "_stderr,", 1)] = stderr(values)
    return results


def _aggregate(results: dict[str, dict], sizes: dict[str, int]) -> tuple[dict[str, float], dict[str, float]]:
    """A group's metrics: lm-eval's size-weighted mean of its tasks' and pooled stderr."""
    from lm_eval.api.metrics import aggregate_subtask_metrics, pooled_sample_stderr

    metrics, errors = {}, {}
    keys = dict.fromkeys(k for r in results.values() for k in r if "," in k and "_stderr," not in k)
    for key in keys:
        have = [leaf for leaf, r in results.items() if isinstance(r.get(key), int | float)]
        if not have:
            continue
        metrics[key] = aggregate_subtask_metrics([results[t][key] for t in have], [sizes[t] for t in have], True)
        err_key = key.replace(",", "_stderr,", 1)
        errs = [results[t].get(err_key) for t in have]
        if all(isinstance(e, int | float) and not math.isnan(e) for e in errs) and sum(sizes[t] for t in have) > 1:
            errors[key] = pooled_sample_stderr(errs, [sizes[t] for t in have])
    return metrics, errors


def make_lm(
    settings: EvalSettings, model=None, tokenizer=None, folder: Path | None = None, device: str = "auto", encoders=None
):
    """The lm-eval model that runs the requests (`backends/`: merger's, the default, or lm-eval's own)."""
    from merger.evaluate import backends

    return backends.make(settings, model, tokenizer, folder, device, encoders)


class Prepared:
    """lm-eval's tasks for one set of eval settings, built once (names checked, data read) and reused by every
    model scored with those settings: a sweep's workspace keeps one per eval key."""

    def __init__(self, settings: EvalSettings):
        ensure_punkt_tab()
        self.names = expand(check_names(settings.tasks, settings.include_path))
        self.root = data_dir(settings.data_dir)
        with mirrored(self.root):
            self.loaded = load_tasks(self.names, settings)
        self.fewshot_seed = settings.fewshot_seed

    def sizes(self) -> dict[str, int]:
        """Task -> the items in its file (a group's leaves together), as a report's `n_total` counts them."""
        with mirrored(self.root):
            return {name: sum(len(task.eval_docs) for task in self.loaded[name].values()) for name in self.names}

    def tasks(self) -> dict[str, dict[str, Any]]:
        """The tasks, their few-shot samplers reseeded: a reused task draws the same few-shot examples as a new
        one (lm-eval's sampler is stateful)."""
        for leaves in self.loaded.values():
            for task in leaves.values():
                task.set_fewshot_seed(seed=self.fewshot_seed)
        return self.loaded


def evaluate(
    lm,
    settings: EvalSettings,
    *,
    limit: int | None = None,
    offset: int = 0,
    show_progress: bool = True,
    prepared: Prepared | None = None,
    cache: ItemCache | None = None,
    model: Scored | None = None,
) -> EvalReport:
    """Score an lm-eval model on `settings.tasks` (items [offset, offset + limit) of each task's seeded order, or
    `settings.limit`); the same settings give the same items for every model. `prepared`: the tasks already built
    for these settings. With a `cache` and the `model`'s identity (`cache.py`), items the cache holds for this
    model and task are read from it, only the others are scored, and those are added to it; `lm` may then be a
    function making the model, called only when something is left to score."""
    import lm_eval.evaluator

    limit = limit if limit is not None else settings.limit
    prepared = prepared or Prepared(settings)
    names, root = prepared.names, prepared.root
    report = EvalReport()
    made: list = []

    def the_lm():
        if not made:
            made.append(lm() if callable(lm) and not hasattr(lm, "loglikelihood") else lm)
        return made[0]

    if model is not None:
        chat = bool(settings.apply_chat_template) and model.chat_template
    else:
        chat = bool(settings.apply_chat_template) and the_lm().chat_template(True) is not None
    cache = cache if model is not None else None
    progress = (
        Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        if show_progress
        else None
    )
    with mirrored(root), progress or nullcontext():
        loaded = prepared.tasks()
        for name in names:
            tasks = loaded[name]
            pairs = [(leaf, i) for leaf, task in tasks.items() for i in range(len(task.eval_docs))]
            chosen = [pairs[i] for i in sample_indices(len(pairs), limit, settings.seed, offset)]
            positions = {pair: offset + k for k, pair in enumerate(chosen)}
            leaves = [leaf for leaf in tasks if any(t == leaf for t, _ in chosen)]
            if not leaves:
                raise UserError.one(name, "limit", f"no items left to score (offset {offset} of {len(pairs)})")
            shots = {tasks[leaf].get_config("num_fewshot") for leaf in leaves}
            key = task_key(name, tasks, settings) if cache and all(map(cacheable, tasks.values())) else None
            stored = doc_keys(tasks, chosen) if key else {}
            records = _cached(cache, model, key, name, tasks, stored)
            hit = bool(records)
            todo = [pair for pair in chosen if pair not in records]
            started, out = time.perf_counter(), None
            if todo:
                samples = {leaf: sorted(i for t, i in todo if t == leaf) for leaf in tasks}
                run = [leaf for leaf in tasks if samples[leaf]]
                if progress is not None:
                    bar = progress.add_task(f"{name} ({'/'.join(map(str, sorted(shots)))}-shot)", total=len(todo))
                    the_lm().advance = lambda n, bar=bar: progress.advance(bar, n)
                out = lm_eval.evaluator.evaluate(
                    lm=the_lm(),
                    task_dict={"tasks": {leaf: tasks[leaf] for leaf in run}},
                    samples={leaf: samples[leaf] for leaf in run},
                    bootstrap_iters=BOOTSTRAP_ITERS,
                    log_samples=True,
                    system_instruction=settings.system_instruction,
                    apply_chat_template=chat,
                    fewshot_as_multiturn=chat and settings.fewshot_as_multiturn,
                    verbosity="ERROR",
                )
            seconds = time.perf_counter() - started
            protocol = PROTOCOLS.get(name)
            preset, proto = protocol if protocol else (None, None)
            if hit:  # some from the cache, so every metric is a mean over items (`cacheable`)
                primary = next(iter(records.values())).primary or ""  # as the run that cached them named it
                records.update(_items(name, tasks, out["samples"] if out else {}, primary))
                results = {leaf: _means([r for (t, _), r in records.items() if t == leaf]) for leaf in leaves}
            else:
                results = {leaf: out["results"][leaf] for leaf in leaves}
            if leaves == [name]:
                result = results[name]
                metrics = {
                    k: v for k, v in result.items() if "," in k and "_stderr," not in k and _number(v) is not None
                }
                errors = {k: result.get(k.replace(",", "_stderr,", 1)) for k in metrics}
                errors = {k: float(v) for k, v in errors.items() if isinstance(v, int | float)}
            else:
                metrics, errors = _aggregate(results, {leaf: sum(1 for t, _ in chosen if t == leaf) for leaf in leaves})
            if not hit:
                primary = proto.metric if proto and proto.metric in metrics else next(iter(metrics), "")
                records.update(_items(name, tasks, out["samples"], primary))
            if key and todo:
                cache.put(model.key, key, {stored[pair]: records[pair] for pair in todo})
            first = tasks[leaves[0]].config
            k = sorted(shots)[0]
            for pair, record in records.items():
                record.position = positions[pair]
            report.items += sorted(records.values(), key=lambda r: r.position)
            datasets_read = {(tasks[leaf].config.dataset_path, tasks[leaf].config.dataset_name) for leaf in leaves}
            report.tasks[name] = TaskScore(
                metrics={k_: float(v) for k_, v in metrics.items()},
                stderr=errors,
                primary=primary,
                n=len(chosen),
                n_total=len(pairs),
                num_fewshot=k,
                seconds=seconds,
                cached=len(chosen) - len(todo),
                title=proto.title if proto else name,
                dataset=first.dataset_path,
                dataset_config=first.dataset_name if len(datasets_read) == 1 else None,
                split=_split(tasks[leaves[0]]),
                protocol=preset if proto and proto.num_fewshot in (None, k) and len(shots) == 1 else None,
                chat_template=chat,
                data=str(root) if root and (root / str(first.dataset_path)).is_dir() else "hub",
                lm_eval=version("lm_eval"),
            )
    return report


def evaluate_folder(
    model_dir: Path,
    settings: EvalSettings,
    *,
    device: str = "auto",
    json_out: Path | None = None,
    items_out: Path | None = None,
    cache: Path | None = None,
) -> EvalReport:
    """`merger eval`: score a model folder with the chosen backend, items already in the per-item cache (the folder
    `cache`; None: off) read from it; write the summary and items where asked."""
    from merger.core.hf import require_model_folder
    from merger.evaluate.report import write_items, write_summary

    folder = require_model_folder(Path(model_dir))
    store = ItemCache(cache) if cache else None
    try:
        model = store.folder_model(folder, runtime(settings.backend, device)) if store else None
        report = evaluate(lambda: make_lm(settings, folder=folder, device=device), settings, cache=store, model=model)
    finally:
        if store:
            store.close()
    if json_out:
        write_summary(report, json_out)
    if items_out:
        write_items(report, items_out)
    return report
