"""Seconds per candidate of a 5-point SLERP t sweep on SmolLM2: `merger sweep` (racing, and on every item)
against the pipeline users run by hand today (`mergekit-yaml` to disk, then lm-eval on the same items), in one
run, with the items each scored.

    .venv/bin/python scripts/bench_sweep.py [--limit 8] [--task arc_challenge] [--shots 25]
    .venv/bin/python scripts/bench_sweep.py --executor ray --workers 2 [--ray-address auto]

With `--executor ray` the same sweep runs twice instead, with the local executor and with Ray workers, and the
ratio of the two is printed. The second model is a lightly perturbed copy of SmolLM2 (a stand-in for a sibling
fine-tune; `--noise 0.05` makes one clearly worse, so racing has something to stop); every pipeline merges the
same five configs and scores the same items.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TS = [0.0, 0.25, 0.5, 0.75, 1.0]


def sibling(base: Path, folder: Path, noise: float = 0.001) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(base, folder)
    g = torch.Generator().manual_seed(1)
    weights = load_file(base / "model.safetensors")
    save_file(
        {k: v + noise * v.float().std() * torch.randn(v.shape, generator=g) for k, v in weights.items()},
        folder / "model.safetensors",
        metadata={"format": "pt"},
    )
    return folder


def main() -> None:
    import yaml
    from rich.console import Console
    from rich.table import Table

    from merger.core.demo import prepare

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--task", default="arc_challenge")
    parser.add_argument("--shots", type=int, default=25)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "evaldata" / "hub"))
    parser.add_argument("--executor", default="local", help="ray: time Ray workers against the local executor")
    parser.add_argument("--workers", type=int, default=None, help="Ray workers (default: one per GPU, else core)")
    parser.add_argument("--ray-address", default=None, help="a running Ray cluster (default: start one here)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--noise", type=float, default=0.001, help="the sibling's noise, in each tensor's std (racing needs a gap)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp())
    base = prepare("smollm2")
    other = sibling(base, work / "sibling", args.noise)
    merge = {
        "merge_method": "slerp",
        "base_model": str(base),
        "dtype": "float32",
        "parameters": {"t": 0.5},
        "slices": [
            {"sources": [{"model": str(base), "layer_range": [0, 30]}, {"model": str(other), "layer_range": [0, 30]}]}
        ],
    }
    recipe, every_item = work / "sweep.yaml", work / "every-item.yaml"
    for path, race in ((recipe, True), (every_item, False)):
        path.write_text(
            yaml.safe_dump(
                {
                    "merge": merge,
                    "sweep": {"merge.parameters.t": TS},
                    "eval": {
                        "tasks": [args.task],
                        "limit": args.limit,
                        "num_fewshot": args.shots,
                        "data_dir": args.data_dir,
                    },
                    "select": {"race": race},
                }
            )
        )

    def timed_sweep(out: Path, *flags: str, path: Path = recipe) -> float:
        started = time.perf_counter()
        cmd = [str(BIN / "merger"), "sweep", str(path), "--out", str(out), "--device", args.device, *flags]
        subprocess.run(cmd, check=True, capture_output=True)
        return (time.perf_counter() - started) / len(TS)

    def items(out: Path) -> int:
        import sqlite3

        with sqlite3.connect(out / "journal.sqlite") as db:
            return db.execute("SELECT COUNT(*) FROM items WHERE split='select'").fetchone()[0]

    ours = timed_sweep(work / "sweep")
    if args.executor == "ray":
        flags = ["--executor", "ray"] + (["--workers", str(args.workers)] if args.workers else [])
        ray_s = timed_sweep(work / "ray", *flags, *(["--ray-address", args.ray_address] if args.ray_address else []))
        table = Table(title=f"5-point SLERP sweep on SmolLM2, {args.limit} {args.task} items ({args.shots}-shot)")
        for column in ("executor", "seconds per candidate (wall)"):
            table.add_column(column)
        table.add_row("local (one process)", f"{ours:.1f}")
        table.add_row(f"ray ({args.workers or 'default'} workers, cluster start included)", f"{ray_s:.1f}")
        table.add_row("speed-up", f"{ours / ray_s:.2f}x")
        Console().print(table)
        shutil.rmtree(work, ignore_errors=True)
        return

    # By hand, as users run it: per candidate, the mergekit-yaml CLI to disk, then the lm-eval CLI on the same items
    # (its built-in task, pointed at the same local files by a task YAML that includes it, and --samples).
    import json

    from merger.config.recipe import EvalSettings
    from merger.evaluate.evaluator import load_tasks, sample_indices
    from merger.evaluate.mirror import data_dir, mirrored
    from merger.evaluate.tasks import task_manager

    settings = EvalSettings(tasks=[args.task], data_dir=args.data_dir, num_fewshot=args.shots)
    with mirrored(data_dir(args.data_dir)):
        [task] = load_tasks([args.task], settings)[args.task].values()
    config = task.config
    folder = Path(args.data_dir) / config.dataset_path / (config.dataset_name or "default")
    files = {p.stem: str(p) for p in folder.glob("*.jsonl")}
    builtin = task_manager([args.task], []).task_index[args.task].yaml_path  # lm-eval's own file for the task
    (work / "tasks").mkdir()
    (work / "tasks" / "ref.yaml").write_text(
        yaml.safe_dump(
            {"include": str(builtin), "task": "ref_" + args.task, "dataset_path": "json", "dataset_name": None,
             "dataset_kwargs": {"data_files": files}}
        )
    )  # fmt: skip
    indices = sample_indices(len(task.eval_docs), args.limit, settings.seed)
    task_name = "ref_" + args.task
    started = time.perf_counter()
    for t in TS:
        config = work / f"t{t}.yml"
        config.write_text(yaml.safe_dump({**merge, "parameters": {"t": t}}))
        folder = work / f"by-hand-{t}"
        subprocess.run(
            [str(BIN / "mergekit-yaml"), str(config), str(folder), "--no-write-model-card"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                str(BIN / "lm_eval"),
                "run",
                "--model",
                "hf",
                "--model_args",
                f"pretrained={folder},dtype=float32",
                "--tasks",
                task_name,
                "--include_path",
                str(work / "tasks"),
                "--num_fewshot",
                str(args.shots),
                "--samples",
                json.dumps({task_name: indices}),
                "--batch_size",
                "1",
                "--device",
                "cpu",
            ],
            check=True,
            capture_output=True,
        )
    theirs = (time.perf_counter() - started) / len(TS)
    every = timed_sweep(work / "every-item", path=every_item)

    budget = len(TS) * args.limit
    table = Table(title=f"5-point SLERP sweep on SmolLM2, {args.limit} {args.task} items ({args.shots}-shot), CPU")
    for column in ("pipeline", "items scored", "seconds per candidate", "speed-up over by hand"):
        table.add_column(column)
    for name, seconds, n in (
        ("merger sweep, racing (race: true)", ours, items(work / "sweep")),
        ("merger sweep, every item (race: false, the default)", every, items(work / "every-item")),
        ("mergekit-yaml CLI to disk, then lm-eval CLI", theirs, budget),
    ):
        table.add_row(name, f"{n} of {budget}", f"{seconds:.1f}", f"{theirs / seconds:.2f}x")
    Console().print(table)
    report = subprocess.run(
        [str(BIN / "merger"), "report", str(work / "sweep")],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "250"},  # the decision line on one line
    )
    for line in report.stdout.splitlines():
        if line.startswith(("best ", "undecided")):
            Console().print(f"racing's decision: {line}", markup=False)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
