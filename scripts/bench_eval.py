"""Throughput of merger's scorer against lm-eval's, on the same items, the same live model, in one process.

    .venv/bin/python scripts/bench_eval.py [--model DIR] [--limit 8] [--tasks arc_challenge=25,hellaswag=10]

Prints items per second of each, their ratio, and how many per-item decisions (acc, acc_norm) differ.
lm-eval runs its built-in task configs through a local YAML that only points at the same local data.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the lm-eval reference runner lives with the tests

from lmeval_reference import run_reference  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from merger.core.demo import prepare  # noqa: E402
from merger.evaluate.data import sample_indices  # noqa: E402
from merger.evaluate.evaluator import evaluate  # noqa: E402
from merger.evaluate.model import load_model  # noqa: E402
from merger.evaluate.tasks import get_task  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the prepared SmolLM2)")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "evaldata"))
    parser.add_argument("--tasks", default="arc_challenge=25,hellaswag=10")
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=1, help="lm-eval's batch size")
    args = parser.parse_args()

    model_dir = Path(args.model) if args.model else prepare("smollm2")
    model, tokenizer = load_model(model_dir, args.device)
    table = Table(title=f"quick eval throughput, {args.limit} items per task, {model.device}")
    for column in ("task", "shots", "merger items/s", "lm-eval items/s", "speed-up", "max |Δll|", "decisions differ"):
        table.add_column(column, justify="right")
    for spec in args.tasks.split(","):
        name, shots = spec.split("=")
        shots = int(shots)
        started = time.perf_counter()
        ours = evaluate(
            model, tokenizer, [name], limit=args.limit, num_fewshot=shots, data=args.data_dir, show_progress=False
        )
        ours_seconds = time.perf_counter() - started
        task = get_task(name)
        test, pool = task.load(Path(args.data_dir))
        docs = [test[i] for i in sample_indices(len(test), args.limit, 1234)]
        with tempfile.TemporaryDirectory() as work:
            reference, ref_seconds = run_reference(
                model, tokenizer, name, docs, pool, shots, Path(work), batch_size=args.batch_size
            )
        worst = max(abs(a - b) for item in ours.items for a, b in zip(item.lls, reference[item.id]["lls"]))
        differ = sum(
            item.acc != reference[item.id]["acc"]
            or (item.acc_norm is not None and item.acc_norm != reference[item.id].get("acc_norm"))
            for item in ours.items
        )
        table.add_row(
            name,
            str(shots),
            f"{args.limit / ours_seconds:.3f}",
            f"{args.limit / ref_seconds:.3f}",
            f"{ref_seconds / ours_seconds:.2f}x",
            f"{worst:.1e}",
            f"{differ}/{args.limit}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
