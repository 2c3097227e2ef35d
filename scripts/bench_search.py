"""Search against listing, and how well quick subsets rank candidates, on SmolLM2 merges (CPU or GPU).

    .venv/bin/python scripts/bench_search.py [--trials 12] [--limit 40] [--report 100] [--noise 0.05]

1. A two-model SLERP with Sakura-style per-filter gradients (three anchors each for attention and MLP, plus the
   default t: seven weights) between SmolLM2 and a noisier sibling. TPE, CMA-ES and random search (`search:`,
   racing on) against a grid over the default t with as many points as trials, so the grid scores at least as
   many items as any search. For each: the winner's score on report items no trial saw, its selection score,
   the items scored, trials stopped early, and the time.
2. A selection-quality study: `--study-candidates` (>= 8) random points of the same space, each scored on every
   item of the task at several shot counts; Spearman's rank correlation between the candidates' scores on quick
   subsets (the first n items of the seeded order, and every other disjoint slice of n) and their whole-file
   scores, printed as a table (mean over the disjoint slices, and the worst).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

GRADIENT = [f"merge.parameters.t.{f}.value.{i}" for f in (0, 1) for i in range(3)]
DEFAULT_T = "merge.parameters.t.2.value"


def sibling(base: Path, folder: Path, noise: float) -> Path:
    """SmolLM2 with Gaussian noise (`noise` x each tensor's std): a worse model, so the weights matter."""
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


def recipe(base: Path, other: Path, task: str, limit: int, report: int, **sections) -> dict:
    return {
        "merge": {
            "merge_method": "slerp",
            "base_model": str(base),
            "dtype": "float32",
            "slices": [
                {
                    "sources": [
                        {"model": str(base), "layer_range": [0, 30]},
                        {"model": str(other), "layer_range": [0, 30]},
                    ]
                }
            ],
            "parameters": {
                "t": [
                    {"filter": "self_attn", "value": [0.5, 0.5, 0.5]},
                    {"filter": "mlp", "value": [0.5, 0.5, 0.5]},
                    {"value": 0.5},
                ]
            },
        },
        "eval": {"tasks": [task], "limit": limit},
        "select": {"strategy": "grid", "keep": 1, "report_items": report},  # the grid: every point on every item
        **sections,
    }


def run(work: Path, name: str, data: dict, device: str) -> dict:
    import yaml

    from merger.core.logs import library_output
    from merger.flow.options import RunOptions
    from merger.sweep.run import run_sweep

    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    out = work / name
    started = time.perf_counter()
    with library_output(work / "libraries.log"):
        run_sweep([path], out, RunOptions(device))
    seconds = time.perf_counter() - started
    board = json.loads((out / "leaderboard.json").read_text())
    meta = json.loads((out / "sweep.json").read_text())
    search = meta.get("search") or {}
    winner = board[0]
    return {
        "reported": sum(winner["reported"]["tasks"].values()) / len(winner["reported"]["tasks"]),
        "selected": winner["score"],
        "items": search.get("items_scored", sum(r["n_items"] for r in board)),
        "trials": search.get("trials", len(board)),
        "pruned": search.get("pruned", 0),
        "seconds": seconds,
    }


def search_bench(args, work: Path, base: Path, other: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    space = {path: {"low": 0.0, "high": 1.0} for path in [*GRADIENT, DEFAULT_T]}
    rows = {}
    for sampler in ("tpe", "cmaes", "random"):
        search = {"sampler": sampler, "trials": args.trials, "seed": args.seed, "space": space}
        search["min_items"] = max(1, args.limit // 4)
        data = recipe(base, other, args.task, args.limit, args.report, search=search)
        rows[sampler] = run(work, sampler, data, args.device)
    grid = [round(i / (args.trials - 1), 4) for i in range(args.trials)]
    rows["grid (default t)"] = run(
        work, "grid", recipe(base, other, args.task, args.limit, args.report, sweep={DEFAULT_T: grid}), args.device
    )
    table = Table(
        title=f"Search vs grid: SmolLM2 SLERP, 7 weights, {args.trials} trials, {args.task} "
        f"({args.limit} selection items, {args.report} report items), {args.device}"
    )
    for column in ("strategy", "best on report items", "its selection score", "items scored", "stopped early", "s"):
        table.add_column(column, justify="right")
    for name, r in rows.items():
        table.add_row(
            name,
            f"{r['reported']:.3f}",
            f"{r['selected']:.3f}",
            str(r["items"]),
            f"{r['pruned']}/{r['trials']}",
            f"{r['seconds']:.0f}",
        )
    Console().print(table)


def study(args, base: Path, other: Path) -> None:
    import yaml
    from rich.console import Console
    from rich.table import Table
    from scipy.stats import spearmanr

    from merger.config.recipe import EvalSettings, Points
    from merger.evaluate.evaluator import evaluate, load_tasks, make_lm
    from merger.evaluate.mirror import data_dir, mirrored
    from merger.merge.run import merge_in_memory

    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp())
    path = work / "study.yaml"
    path.write_text(yaml.safe_dump(recipe(base, other, args.task, 1, 1)))
    point = Points(path).at
    candidates = [
        point({p: round(rng.random(), 3) for p in [*GRADIENT, DEFAULT_T]}) for _ in range(args.study_candidates)
    ]
    settings = EvalSettings(tasks=[args.task])
    with mirrored(data_dir(None)):
        [task] = load_tasks([args.task], settings)[args.task].values()
    total = min(len(task.eval_docs), args.study_items or len(task.eval_docs))
    values: dict[int, list[list[float]]] = {shots: [] for shots in args.shots}
    for c in candidates:
        model, tokenizer, _ = merge_in_memory(c, device=args.device, digest=False)
        for shots in args.shots:
            s = EvalSettings(tasks=[args.task], num_fewshot=shots, limit=total)
            report = evaluate(make_lm(s, model, tokenizer), s, show_progress=False)
            values[shots].append([item.metrics[report.tasks[args.task].primary] for item in report.items])
        del model
    table = Table(
        title=f"Rank agreement of quick subsets with all {total} {args.task} items, {len(candidates)} candidates: "
        "Spearman rho (mean over disjoint slices / worst slice)"
    )
    table.add_column("shots")
    sizes = [n for n in args.sizes if n < total]
    for n in sizes:
        table.add_column(f"n={n}", justify="right")
    for shots, per_candidate in values.items():
        whole = [sum(v) / len(v) for v in per_candidate]
        cells = []
        for n in sizes:
            rhos = []
            for start in range(0, total - n + 1, n):
                quick = [sum(v[start : start + n]) / n for v in per_candidate]
                rho = spearmanr(quick, whole).statistic
                rhos.append(0.0 if rho != rho else rho)  # a constant slice ranks nothing
            cells.append(f"{sum(rhos) / len(rhos):.2f} / {min(rhos):.2f}")
        table.add_row(str(shots), *cells)
    Console().print(table)
    spread = {shots: sorted(sum(v) / len(v) for v in per) for shots, per in values.items()}
    Console().print(f"whole-file scores of the candidates: {json.dumps(spread)}")
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    from merger.core.demo import prepare

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="merger_arithmetic")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--limit", type=int, default=40, help="selection items per task")
    parser.add_argument("--report", type=int, default=100, help="report items per task")
    parser.add_argument("--noise", type=float, default=0.05, help="the sibling's noise, x each tensor's std")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--study-candidates", type=int, default=8)
    parser.add_argument("--study-items", type=int, default=None, help="cap the whole file (default: all)")
    parser.add_argument("--shots", type=int, nargs="+", default=[0, 5])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 25, 50, 100, 200])
    parser.add_argument("--skip", choices=["search", "study"], default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp())
    base = prepare("smollm2")
    other = sibling(base, work / "noisy-sibling", args.noise)
    if args.skip != "search":
        search_bench(args, work, base, other)
    if args.skip != "study":
        study(args, base, other)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
