"""Steps per second and peak memory of `merger dpo` against a plain trl script, same model, data and settings.

    .venv/bin/python scripts/bench_dpo.py [--model DIR] [--pairs 16] [--steps 8] [--device cpu]

Each of the four runs (merger/trl x LoRA/full) is its own child process, so each peak memory is its own:
peak resident memory on a CPU, peak allocated GPU memory on CUDA. Steps per second count training only
(trl's train_runtime), not loading, data checks or saving.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "evaldata" / "preferences" / "hh_rlhf_harmless_base_test.jsonl"


def peak_mb(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind: str, full: bool, args) -> dict:
    """One training run; prints {"steps_per_s", "peak_mb"}."""
    from merger.config.train import DPOSettings
    from merger.flow.verbs import train_model

    settings = DPOSettings(
        data=args.data,
        full=full,
        max_steps=args.steps,
        batch_size=2,
        max_length=256,
        lr=5e-5,
        against=["arithmetic"],
        save_steps=10_000,
    )
    out = Path(tempfile.mkdtemp()) / "out"
    if kind == "merger":
        run = train_model(Path(args.model), "dpo", settings, out, device=args.device, show_progress=False)
        return {"steps_per_s": run.steps / run.train_runtime, "peak_mb": peak_mb(args.device)}

    # The script a trl user writes by hand: the same pairs, model, LoRA and hyper-parameters.
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from merger.train.data import read_rows
    from merger.train.pairs import COLUMNS, normalize

    pairs, _ = normalize(read_rows(args.data, ("+".join(COLUMNS),), "preference pairs"), args.data)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
    config = DPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=2,
        learning_rate=5e-5,
        max_steps=args.steps,
        max_length=256,
        report_to=[],
        save_strategy="no",
        use_cpu=args.device == "cpu",
        bf16=args.device == "cuda",
        disable_tqdm=True,
        logging_steps=1,
        seed=42,
    )
    peft = (
        None
        if full
        else LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    trainer = DPOTrainer(
        model=model,
        args=config,
        processing_class=tokenizer,
        peft_config=peft,
        train_dataset=Dataset.from_list([p.as_row() for p in pairs]),
    )
    metrics = trainer.train().metrics
    return {"steps_per_s": args.steps / metrics["train_runtime"], "peak_mb": peak_mb(args.device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, mode = args.child.split("-")
        print("RESULT " + json.dumps(child(kind, mode == "full", args)))
        return

    from rich.console import Console
    from rich.table import Table

    from merger.core.demo import prepare

    model = args.model or str(prepare("smollm2"))
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    rows = [r for r in rows if len(r["prompt"]) + max(len(r["chosen"]), len(r["rejected"])) < 500][: args.pairs]
    data = Path(tempfile.mkdtemp()) / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = {}
    for mode in ("lora", "full"):
        for kind in ("merger", "trl"):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                f"{kind}-{mode}",
                "--model",
                model,
                "--data",
                str(data),
                "--steps",
                str(args.steps),
                "--device",
                args.device,
            ]
            output = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            results[(kind, mode)] = json.loads(output.split("RESULT ", 1)[1])
    table = Table(title=f"DPO, {args.steps} steps of 2 pairs, max_length 256, {args.device}")
    for column in ("mode", "merger steps/s", "trl steps/s", "merger / trl speed", "merger peak MB", "trl peak MB"):
        table.add_column(column, justify="right")
    for mode in ("lora", "full"):
        ours, theirs = results[("merger", mode)], results[("trl", mode)]
        table.add_row(
            mode,
            f"{ours['steps_per_s']:.3f}",
            f"{theirs['steps_per_s']:.3f}",
            f"{ours['steps_per_s'] / theirs['steps_per_s']:.3f}",
            f"{ours['peak_mb']:.0f}",
            f"{theirs['peak_mb']:.0f}",
        )
    Console().print(table)
    lora, full = results[("merger", "lora")]["peak_mb"], results[("merger", "full")]["peak_mb"]
    print(f"merger LoRA peak memory is {lora / full:.2f}x of full fine-tuning's")


if __name__ == "__main__":
    main()
