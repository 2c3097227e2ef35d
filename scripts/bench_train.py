"""merger's training stage against plain trl, and what healing a depth up-scale buys, on SmolLM2-135M-Instruct.

    .venv/bin/python scripts/bench_train.py [--steps 40] [--speed-steps 8] [--limit 200] [--json FILE] [--device cpu]

1. Speed: `merger train` (continued pretraining, LoRA) against the SFTTrainer script a trl user writes by hand, with
   the same model, data, packing and hyper-parameters, each in its own child process: seconds per optimizer step
   (trl's train_runtime / steps: training only), peak memory (resident on a CPU, allocated on CUDA), and the two
   loss curves step by step.
2. Healing: the source, its plain SOLAR up-scale (30 layers, overlap 8 -> 44), the function-preserving up-scale
   (`preserve: true`), and each after `--steps` steps of continued pretraining on shared/evaldata/text/train.jsonl:
   the plain one with LoRA on every layer, with and without distillation from the source, and the preserving one
   with only its inserted layers trained (LLaMA Pro). Each model's held-out perplexity (the first 32 texts of
   heldout.jsonl, 256 tokens each) and its HellaSwag score (0-shot, the same `--limit` items for every model);
   the share of the up-scale's perplexity gap to the source each heal recovers; the preserving up-scale's largest
   logit difference from the source on the held-out texts.

--json FILE writes: merger_step_s, trl_step_s, step_ratio (merger / trl), merger_peak_mb, trl_peak_mb,
loss_max_diff, preserve_max_logit_diff, perplexity {model: value}, hellaswag {model: acc_norm}, gap_recovered
{model: share}, heal_steps, tokens_per_step.
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
TEXT = REPO.parent / "shared" / "evaldata" / "text"
HUB = REPO.parent / "shared" / "evaldata" / "hub"
MAX_LENGTH, BATCH, LR = 256, 2, 2e-4


def peak_mb(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def heal_settings(steps: int, **extra):
    """Continued pretraining on train.jsonl with the bench's shape: the same for the speed runs and the heals."""
    from merger.config.train import SFTSettings

    return SFTSettings(
        data=str(TEXT / "train.jsonl"),
        max_steps=steps,
        batch_size=BATCH,
        max_length=MAX_LENGTH,
        lr=LR,
        against=[],
        **extra,
    )


def child(kind: str, args) -> dict:
    """One timed run of `--speed-steps` steps; prints {"step_s", "peak_mb", "losses"}."""
    out = Path(tempfile.mkdtemp()) / "out"
    if kind == "merger":
        from merger.flow.verbs import train_model

        settings = heal_settings(args.speed_steps, save_steps=10_000)
        run = train_model(Path(args.model), "pretrain", settings, out, device=args.device, show_progress=False)
        losses = [json.loads(line)["loss"] for line in (out / "train_metrics.jsonl").read_text().splitlines()]
        return {"step_s": run.train_runtime / run.steps, "peak_mb": peak_mb(args.device), "losses": losses}

    # The script a trl user writes by hand: the same rows, model, LoRA, packing and hyper-parameters.
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    config = SFTConfig(
        output_dir=str(out),
        per_device_train_batch_size=BATCH,
        learning_rate=LR,
        max_steps=args.speed_steps,
        max_length=MAX_LENGTH,
        packing=True,
        packing_strategy="wrapped",
        report_to=[],
        save_strategy="no",
        use_cpu=args.device == "cpu",
        bf16=args.device == "cuda",
        disable_tqdm=True,
        logging_steps=1,
        seed=42,
    )
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype),
        args=config,
        processing_class=AutoTokenizer.from_pretrained(args.model),
        train_dataset=load_dataset("json", data_files=str(TEXT / "train.jsonl"), split="train"),
        peft_config=LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
        ),
    )
    metrics = trainer.train().metrics
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"step_s": metrics["train_runtime"] / args.speed_steps, "peak_mb": peak_mb(args.device), "losses": losses}


def speed(args) -> dict:
    results = {}
    for kind in ("merger", "trl"):
        cmd = [sys.executable, __file__, "--child", kind, "--model", args.model, "--device", args.device]
        cmd += ["--speed-steps", str(args.speed_steps)]
        output = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results[kind] = json.loads(output.split("RESULT ", 1)[1])
    ours, theirs = results["merger"], results["trl"]
    return {
        "merger_step_s": ours["step_s"],
        "trl_step_s": theirs["step_s"],
        "step_ratio": ours["step_s"] / theirs["step_s"],
        "merger_peak_mb": ours["peak_mb"],
        "trl_peak_mb": theirs["peak_mb"],
        "loss_max_diff": max(abs(a - b) for a, b in zip(ours["losses"], theirs["losses"])),
        "losses": {"merger": ours["losses"], "trl": theirs["losses"]},
    }


def upscale(work: Path, model: str, preserve: bool) -> Path:
    recipe = work / f"dus-{preserve}.yaml"
    recipe.write_text(
        json.dumps({"depth_upscale": {"model": model, "overlap": 8, "dtype": "float32", "preserve": preserve}})
    )
    out = work / ("preserve" if preserve else "upscaled")
    subprocess.run(
        [str(REPO / ".venv/bin/merger"), "merge", str(recipe), "--out", str(out), "--device", "cpu"],
        check=True,
        capture_output=True,
    )
    return out


def heal(source: Path, out: Path, args, **extra) -> Path:
    from merger.flow.verbs import train_model

    train_model(source, "pretrain", heal_settings(args.steps, **extra), out, device=args.device, show_progress=True)
    return out


def measure(models: dict[str, Path], args) -> tuple[dict, dict, float]:
    import torch

    from merger.config.recipe import EvalSettings
    from merger.evaluate.evaluator import evaluate_folder
    from merger.evaluate.model import load_model
    from merger.train.perplexity import heldout_texts, perplexity

    texts = heldout_texts(str(TEXT / "heldout.jsonl"), 32)
    ppl, scores, logits = {}, {}, {}
    for name, folder in models.items():
        model, tokenizer = load_model(folder, args.device)
        ppl[name] = perplexity(model, tokenizer, texts, MAX_LENGTH)[0]
        if name in ("source", "preserve"):
            with torch.no_grad():
                logits[name] = [
                    model(**tokenizer(t, return_tensors="pt", truncation=True, max_length=MAX_LENGTH).to(model.device))
                    .logits.float()
                    .cpu()
                    for t in texts
                ]
        del model
        settings = EvalSettings(tasks=["hellaswag"], limit=args.limit, num_fewshot=0, data_dir=str(HUB))
        task = evaluate_folder(folder, settings, device=args.device).tasks["hellaswag"]
        scores[name] = task.metrics[task.primary]
        print(f"{name}: perplexity {ppl[name]:.3f}, hellaswag {scores[name]:.3f}", flush=True)
    gap = max((a - b).abs().max().item() for a, b in zip(logits["source"], logits["preserve"]))
    return ppl, scores, gap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--steps", type=int, default=40, help="healing steps")
    parser.add_argument("--speed-steps", type=int, default=8)
    parser.add_argument("--limit", type=int, default=200, help="HellaSwag items per model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args)))
        return

    from rich.console import Console
    from rich.table import Table

    from merger.core.demo import prepare
    from merger.core.logs import library_output

    args.model = args.model or str(prepare("smollm2"))
    console = Console()
    figures: dict = {"heal_steps": args.steps, "tokens_per_step": BATCH * MAX_LENGTH}
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    upscaled = upscale(work, args.model, False)
    if not args.skip_speed:
        figures.update(speed(argparse.Namespace(**{**vars(args), "model": str(upscaled)})))
        table = Table(
            title=f"continued pretraining of the 44-layer up-scale, LoRA, {args.speed_steps} steps of "
            f"{BATCH}x{MAX_LENGTH} tokens, {args.device}"
        )
        for column in ("", "s / step", "peak MB", "loss, first -> last"):
            table.add_column(column, justify="right")
        for kind in ("merger", "trl"):
            losses = figures["losses"][kind]
            table.add_row(
                kind,
                f"{figures[f'{kind}_step_s']:.3f}",
                f"{figures[f'{kind}_peak_mb']:.0f}",
                f"{losses[0]:.4f} -> {losses[-1]:.4f}",
            )
        console.print(table)
        console.print(
            f"merger / trl time per step: {figures['step_ratio']:.3f}; "
            f"largest loss difference at any step: {figures['loss_max_diff']:.2e}"
        )
    preserve = upscale(work, args.model, True)
    with library_output(work / "bench.log"):  # the libraries' bars and warnings go to a log, as in merger's verbs
        models = {
            "source": Path(args.model),
            "upscaled": upscaled,
            "preserve": preserve,
            "upscaled+cpt": heal(upscaled, work / "upscaled-cpt", args),
            "upscaled+cpt+distill": heal(upscaled, work / "upscaled-distill", args, distill=True),
            "preserve+cpt(inserted)": heal(preserve, work / "preserve-cpt", args, layers="inserted"),
        }
        ppl, scores, gap = measure(models, args)
    recovered = {
        name: (ppl["upscaled"] - ppl[name]) / (ppl["upscaled"] - ppl["source"])
        for name in models
        if name.startswith("upscaled+")
    }
    figures.update(perplexity=ppl, hellaswag=scores, gap_recovered=recovered, preserve_max_logit_diff=gap)
    table = Table(title=f"healing: {args.steps} steps of {BATCH}x{MAX_LENGTH} tokens of continued pretraining")
    for column in ("model", "held-out perplexity", f"HellaSwag acc_norm ({args.limit} items)", "gap recovered"):
        table.add_column(column, justify="right")
    for name in models:
        share = f"{recovered[name]:.0%}" if name in recovered else ""
        table.add_row(name, f"{ppl[name]:.3f}", f"{scores[name]:.3f}", share)
    console.print(table)
    console.print(f"function-preserving up-scale: largest logit difference from the source {gap:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
