"""Seconds per candidate of a 5-point SLERP t sweep on SmolLM2, by strategy: every item at once, successive halving
at about 20% of the every-item sweep's item evaluations, racing, and the pipeline users run by hand (`mergekit-yaml`
to disk, then lm-eval on the same items), in one run; with the work each sweep really did, read from its journal's
`work` rows (the workers' own counters), not assumed.

    .venv/bin/python scripts/bench_sweep.py --task hellaswag --shots 0 --limit 100 [--json FILE]
    .venv/bin/python scripts/bench_sweep.py ... --executor ray --workers 2 [--ray-address auto]

`--json FILE` writes, per pipeline: `per_candidate_s`, `items_fraction` (item evaluations over the every-item
sweep's), `merges_per_candidate`, `task_builds`, `input_bytes_read` (and `input_bytes` for scale: the inputs'
size), `scoring_s` and `overhead_s` per candidate (time inside the forward passes, and everything else, in
worker-seconds: the wall time per candidate times the workers, less the forward passes). With
`--executor ray` the merger sweeps run on Ray workers. The second model is a lightly perturbed copy of SmolLM2 (a
stand-in for a sibling fine-tune; `--noise 0.05` makes one clearly worse, so racing has something to stop).
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
    parser.add_argument("--json", default=None, help="write the figures here")
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
    selects = {
        "every item": {"strategy": "grid"},
        "halving": {"strategy": "halving", "budget": 0.2},  # a fifth of the every-item sweep's evaluations
        "racing": {"strategy": "grid", "race": True},
    }
    recipes = {}
    for name, select in selects.items():
        recipes[name] = work / f"{name.replace(' ', '-')}.yaml"
        recipes[name].write_text(
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
                    "select": select,
                }
            )
        )
    executor = []
    if args.executor == "ray":
        executor = ["--executor", "ray", *(["--workers", str(args.workers)] if args.workers else [])]
        executor += ["--ray-address", args.ray_address] if args.ray_address else []

    def counted(out: Path) -> dict:
        """The work the sweep did, from the journal: its workers' own counters."""
        import sqlite3

        with sqlite3.connect(out / "journal.sqlite") as db:
            items = db.execute("SELECT COUNT(*) FROM items WHERE split='select'").fetchone()[0]
            merges, builds, read, scoring = db.execute(
                "SELECT SUM(merges), SUM(task_builds), SUM(input_bytes_read), SUM(scoring_s) FROM work"
            ).fetchone()
            workers = db.execute("SELECT COUNT(DISTINCT worker) FROM work WHERE stage != 'task-sizes'").fetchone()[0]
            scored = db.execute("SELECT COUNT(DISTINCT candidate) FROM work WHERE stage LIKE 'eval-%'").fetchone()[0]
        return {
            "items": items,
            "merges_per_candidate": merges / scored,
            "task_builds": builds,
            "workers": workers,
            "input_bytes_read": read,
            "scoring_s": scoring / len(TS),
        }

    def timed_sweep(name: str) -> dict:
        out = work / name.replace(" ", "-")
        started = time.perf_counter()
        cmd = [
            str(BIN / "merger"),
            "sweep",
            str(recipes[name]),
            "--out",
            str(out),
            "--device",
            args.device,
            "--no-cache",
        ]
        subprocess.run([*cmd, *executor], check=True, capture_output=True)
        return {"per_candidate_s": (time.perf_counter() - started) / len(TS), **counted(out)}

    figures = {name: timed_sweep(name) for name in selects}

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
    budget = len(TS) * args.limit
    figures["by hand"] = {"per_candidate_s": theirs, "items": budget, "merges_per_candidate": 1.0}
    input_bytes = sum(f.stat().st_size for m in (base, other) for f in Path(m).glob("*.safetensors"))
    for row in figures.values():
        row["items_fraction"] = row["items"] / figures["every item"]["items"]
        row["input_bytes"] = input_bytes
        if "scoring_s" in row:  # in worker-seconds: with several workers the forward passes add up across them
            row["overhead_s"] = row["per_candidate_s"] * row["workers"] - row["scoring_s"]
        row["vs_every_item"] = row["per_candidate_s"] / figures["every item"]["per_candidate_s"]
        row["speed_up_over_by_hand"] = theirs / row["per_candidate_s"]

    where = f"{args.executor} executor" + (f", {args.workers} workers" if args.workers else "")
    table = Table(title=f"5-point SLERP sweep on SmolLM2, {args.limit} {args.task} items ({args.shots}-shot), {where}")
    for column in (
        "pipeline", "items scored", "s / candidate", "vs every item", "over by hand", "merges / cand.",
        "task builds", "input GB read", "scoring s / cand.", "overhead s / cand.",
    ):  # fmt: skip
        table.add_column(column)
    for name, row in figures.items():
        table.add_row(
            name,
            f"{row['items']} of {budget} ({row['items_fraction']:.0%})",
            f"{row['per_candidate_s']:.1f}",
            f"{row['vs_every_item']:.2f}x",
            f"{row['speed_up_over_by_hand']:.2f}x",
            f"{row['merges_per_candidate']:.1f}",
            str(row.get("task_builds", "-")),
            f"{row['input_bytes_read'] / 1e9:.2f} of {input_bytes / 1e9:.2f}" if "input_bytes_read" in row else "-",
            f"{row['scoring_s']:.1f}" if "scoring_s" in row else "-",
            f"{row['overhead_s']:.1f} ({row['overhead_s'] / (row['per_candidate_s'] * row['workers']):.0%})"
            if "overhead_s" in row
            else "-",
        )
    Console().print(table)
    if args.json:
        summary = {"task": args.task, "limit": args.limit, "shots": args.shots, "executor": args.executor}
        Path(args.json).write_text(json.dumps({**summary, "pipelines": figures}, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
