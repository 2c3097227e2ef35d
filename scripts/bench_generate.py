"""Greedy generation of merger's backend against lm-eval's `hf` model (and `vllm` when installed and given a folder):
the same GSM8K items, prompts and generation arguments, one live model, in one run.

    .venv/bin/python scripts/bench_generate.py [--model DIR] [--limit 20] [--shots 5] [--max-gen-toks N]
        [--batch-size 1] [--json FILE]

Both run through lm-eval's evaluator; only the backend differs. Every `model.generate` call is timed and counted:
tokens/s (rows x steps generated, per second inside generate), step milliseconds (seconds per decode step of a
batch), rows per batch, peak GPU memory (none on a CPU), and whether every generation is identical. lm-eval's `hf`
runs `--batch-size` rows (its default is 1); merger sizes its batches from the free memory on a GPU (one row on a
CPU, where identity is the check). `--json FILE` writes those fields, one object per backend under `backends`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from merger.config.recipe import EvalSettings  # noqa: E402
from merger.core.demo import prepare  # noqa: E402
from merger.evaluate.evaluator import evaluate, make_lm  # noqa: E402
from merger.evaluate.model import load_model  # noqa: E402


class Counted:
    """`model.generate`, timed and counted: rows and decode steps of every call."""

    def __init__(self, model):
        self.model, self.real = model, model.generate
        self.calls: list[tuple[int, int, float]] = []  # (rows, steps, seconds)
        model.generate = self

    def __call__(self, input_ids, **kwargs):
        if input_ids.is_cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        out = self.real(input_ids=input_ids, **kwargs)
        if out.is_cuda:
            torch.cuda.synchronize()
        self.calls.append((input_ids.shape[0], out.shape[1] - input_ids.shape[1], time.perf_counter() - started))
        return out

    def figures(self) -> dict:
        tokens = sum(rows * steps for rows, steps, _ in self.calls)
        seconds = sum(s for _, _, s in self.calls)
        steps = sum(steps for _, steps, _ in self.calls)
        return {
            "tokens_per_s": round(tokens / seconds, 1),
            "step_ms": round(1000 * seconds / max(steps, 1), 2),
            "rows": max(rows for rows, _, _ in self.calls),
            "batches": len(self.calls),
            "generate_s": round(seconds, 2),
        }


def run(settings: EvalSettings, model, tokenizer, folder: Path) -> tuple[dict, list[str]]:
    counted = Counted(model)
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        lm = make_lm(settings, model, tokenizer, folder=folder if settings.backend == "vllm" else None)
        started = time.perf_counter()
        report = evaluate(lm, settings, show_progress=False)
        figures = {"seconds": round(time.perf_counter() - started, 2)}
    finally:
        model.generate = counted.real
    generations = [item.generation for item in report.items]
    if counted.calls:
        figures |= counted.figures()
    else:  # vLLM generates in its own engine: tokens counted from the text, no steps or rows seen
        tokens = sum(len(tokenizer.encode(g, add_special_tokens=False)) for g in generations)
        figures |= {"tokens_per_s": round(tokens / figures["seconds"], 1), "step_ms": None, "rows": None}
        figures |= {"batches": None, "generate_s": None}
    figures["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2) if model.device.type == "cuda" else None
    return figures, generations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the prepared SmolLM2)")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "evaldata" / "hub"))
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--max-gen-toks", type=int, default=None, help="cap generation length (every backend)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=1, help="lm-eval hf's batch size (its default is 1)")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()

    folder = Path(args.model) if args.model else prepare("smollm2")
    model, tokenizer = load_model(folder, args.device)
    common = dict(tasks=["gsm8k"], num_fewshot=args.shots, limit=args.limit, data_dir=args.data_dir)
    if args.max_gen_toks:
        common["gen_kwargs"] = f"max_gen_toks={args.max_gen_toks}"
    backends = {
        "merger": EvalSettings(**common),
        "hf": EvalSettings(**common, backend="hf", batch_size=args.batch_size),
    }
    try:
        import vllm  # noqa: F401

        backends["vllm"] = EvalSettings(**common, backend="vllm")
    except ImportError:
        pass
    figures, generations = {}, {}
    for name, settings in backends.items():
        figures[name], generations[name] = run(settings, model, tokenizer, folder)
    for name in backends:
        differ = sum(a != b for a, b in zip(generations[name], generations["hf"]))
        figures[name]["differ_from_hf"] = differ
    out = {
        "device": str(model.device),
        "items": args.limit,
        "shots": args.shots,
        "identical": all(f["differ_from_hf"] == 0 for f in figures.values()),
        "speedup_vs_hf": round(figures["merger"]["tokens_per_s"] / figures["hf"]["tokens_per_s"], 2),
        "backends": figures,
    }
    table = Table(title=f"GSM8K {args.limit} items, {args.shots}-shot, greedy, {model.device}")
    for column in ("backend", "tokens/s", "step ms", "rows", "batches", "seconds", "peak GiB", "differ from hf"):
        table.add_column(column, justify="right")
    for name, f in figures.items():
        peak = "-" if f["peak_gib"] is None else f"{f['peak_gib']:.2f}"
        table.add_row(
            name,
            f"{f['tokens_per_s']:.1f}",
            "-" if f["step_ms"] is None else f"{f['step_ms']:.1f}",
            str(f["rows"] or "-"),
            str(f["batches"] or "-"),
            f"{f['seconds']:.1f}",
            peak,
            f"{f['differ_from_hf']}/{args.limit}",
        )
    console = Console()
    console.print(table)
    console.print(f"merger / hf tokens/s: {out['speedup_vs_hf']}x; every generation identical: {out['identical']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
