"""Throughput of merger's backend against lm-eval's `hf` model: the same lm-eval tasks, items and live model.

    .venv/bin/python scripts/bench_eval.py [--model DIR] [--limit 8] [--tasks arc_challenge=25,hellaswag=10,gsm8k=5]

Both run through lm-eval's evaluator; only the model backend differs. Each runs `--repeat` times, alternating with
the other, after an untimed first item, and its best run counts. Prints items per second of each, their ratio,
the largest log-likelihood difference, and how many items' metrics (or generations) differ. gsm8k is generation
(`generate_until`): merger batches it (`--gen-batch`, default by device), lm-eval's hf model runs `--batch-size`.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from merger.config.recipe import EvalSettings  # noqa: E402
from merger.core.demo import prepare  # noqa: E402
from merger.evaluate.evaluator import evaluate, make_lm  # noqa: E402
from merger.evaluate.model import load_model  # noqa: E402


def timed(settings: EvalSettings, model, tokenizer):
    """One backend's run over the items, after an untimed first item (so neither pays the other's warm-up)."""
    lm = make_lm(settings, model, tokenizer)
    evaluate(lm, settings, limit=1, show_progress=False)
    started = time.perf_counter()
    report = evaluate(lm, settings, show_progress=False)
    return report, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the prepared SmolLM2)")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "evaldata" / "hub"))
    parser.add_argument("--tasks", default="arc_challenge=25,hellaswag=10,gsm8k=5")
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=1, help="lm-eval's batch size (its default is 1)")
    parser.add_argument("--gen-batch", type=int, default=None, help="merger's batch size (default: by device)")
    parser.add_argument("--max-gen-toks", type=int, default=None, help="cap generation length (both backends)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each backend, alternating; the best counts")
    args = parser.parse_args()

    model_dir = Path(args.model) if args.model else prepare("smollm2")
    model, tokenizer = load_model(model_dir, args.device)
    table = Table(title=f"lm-eval tasks, {args.limit} items each, {model.device}: merger vs lm-eval hf")
    for column in ("task", "shots", "merger items/s", "lm-eval items/s", "speed-up", "max |Δll|", "items differ"):
        table.add_column(column, justify="right")
    for spec in args.tasks.split(","):
        name, shots = spec.split("=")
        common = dict(tasks=[name], num_fewshot=int(shots), limit=args.limit, data_dir=args.data_dir)
        if args.max_gen_toks:
            common["gen_kwargs"] = {"max_gen_toks": args.max_gen_toks}
        ours_s = ref_s = float("inf")
        for _ in range(args.repeat):  # alternating, best of each: what another process did to the machine cancels
            ours, seconds = timed(EvalSettings(**common, batch_size=args.gen_batch), model, tokenizer)
            ours_s = min(ours_s, seconds)
            ref, seconds = timed(EvalSettings(**common, backend="hf", batch_size=args.batch_size), model, tokenizer)
            ref_s = min(ref_s, seconds)
        pairs = list(zip(ours.items, ref.items))
        deltas = [abs(x - y) for a, b in pairs if a.lls for x, y in zip(a.lls, b.lls)]
        differ = sum(a.metrics != b.metrics or a.generation != b.generation for a, b in pairs)
        table.add_row(
            name,
            shots,
            f"{args.limit / ours_s:.3f}",
            f"{args.limit / ref_s:.3f}",
            f"{ref_s / ours_s:.2f}x",
            f"{max(deltas):.1e}" if deltas else "-",
            f"{differ}/{len(pairs)}",
        )
        Console().print(table)


if __name__ == "__main__":
    main()
