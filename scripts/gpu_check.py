"""Every CUDA path merger has, run for real, each with its figures; run it through scripts/gpu_check.sh.

    python scripts/gpu_check.py [--json FILE] [--skip NAME,...] [--card-gib 24]

Checks (each pass / fail / skipped, one line, then its figures):
- device: the GPU, its compute capability, and the dtype merger computes in there (bf16 only where native).
- agreement: merger's scorer against lm-eval's `hf` model through lm-eval's evaluator, both in the compute dtype, on
  the same items of merger's data-free task (a randomly initialized model of SmolLM2-135M's shape with the test
  suite's tokenizer); merger takes its log-softmax in float32, lm-eval in the model's dtype. Tolerance: every
  item's metric equal (near ties within 0.05 aside) and 0.25 nats per request (bf16 keeps 8 bits of mantissa:
  measured on an H200, mean 0.046, largest 0.19 over 160 requests; float32 on a CPU: exact).
- scoring-7b, scoring-8b, scoring-10.7b: randomly initialized Llama-2-7B, Llama-3-8B and SOLAR-10.7B shapes in bf16
  on a GPU with --card-gib free (the rest is taken by a ballast tensor, as on a 24 GB card): 25-shot ARC-shaped
  items (a 1,800-token shared prefix and 4 choices of 24 tokens) through merger's scorer with its memory-derived
  token budget, and greedy generation after a 1,000-token context with its memory-derived batch: items/s,
  tokens/s, peak memory, batches halved after an out-of-memory error.
- dpo, qlora: `merger dpo` (LoRA, and 4-bit QLoRA when bitsandbytes is installed) for 4 steps on a tiny Llama;
  steps/s, peak memory, and the GPU memory left allocated after the run (released: near zero).
- merge-digest: a SLERP merged in memory on the GPU and written to disk by mergekit on the GPU give the same digest.
- sweep: `merger sweep` of a 3-point SLERP grid with --device cuda, scored in the compute dtype.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

SHAPES = {  # name: (layers, hidden, intermediate, heads, kv heads, vocab)
    "7b": (32, 4096, 11008, 32, 32, 32000),  # Llama-2-7B
    "8b": (32, 4096, 14336, 32, 8, 128256),  # Llama-3-8B
    "10.7b": (48, 4096, 14336, 32, 8, 32000),  # SOLAR-10.7B
}
TOLERANCE = 0.25  # nats per request between the two backends in the compute dtype
results: dict[str, dict] = {}


def check(name: str, skip: set[str]):
    def wrap(fn):
        if name in skip:
            results[name] = {"status": "skipped", "why": "--skip"}
            return fn
        started = time.perf_counter()
        try:
            figures = fn() or {}
            status = figures.pop("status", "pass")
            results[name] = {"status": status, **figures}
        except Exception as exc:  # a check's failure is its finding
            results[name] = {"status": "fail", "why": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
            traceback.print_exc()
        results[name]["seconds"] = round(time.perf_counter() - started, 1)
        print(f"{name}: {json.dumps(results[name])}", flush=True)
        return fn

    return wrap


def tiny(root: Path, name: str, seed: int, **options) -> Path:
    from tiny import make_tiny_llama

    return make_tiny_llama(root / name, seed=seed, **options)


def random_llama(shape: tuple, dtype, device: str, std: float = 0.02):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    layers, hidden, inter, heads, kv, vocab = shape
    config = LlamaConfig(
        num_hidden_layers=layers,
        hidden_size=hidden,
        intermediate_size=inter,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=vocab,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        initializer_range=std,
    )
    config._attn_implementation = "sdpa"
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # created in its dtype, on the device: never a float32 copy
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--skip", default="", help="checks to leave out, comma-separated")
    parser.add_argument("--card-gib", type=float, default=24.0, help="GPU memory the big-model checks may use")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    import torch

    from merger.core.device import compute_dtype, release

    cuda = torch.cuda.is_available()
    work = Path(tempfile.mkdtemp())
    if not cuda:
        print("no CUDA device: only what a CPU can check runs", flush=True)

    @check("device", skip)
    def _device():
        if not cuda:
            return {"status": "skipped", "why": "no CUDA device", "torch": torch.__version__}
        props = torch.cuda.get_device_properties(0)
        return {
            "gpu": props.name,
            "capability": ".".join(map(str, torch.cuda.get_device_capability())),
            "memory_gib": round(props.total_memory / 2**30, 1),
            "compute_dtype": str(compute_dtype("cuda")).removeprefix("torch."),
            "torch": torch.__version__,
        }

    device = "cuda" if cuda else "cpu"

    @check("agreement", skip)
    def _agreement():
        from merger.config.recipe import EvalSettings
        from merger.evaluate.evaluator import evaluate, make_lm

        tokenizer_folder = tiny(work, "tok", 0)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
        # weights wide enough that choices differ by more than rounding
        model = random_llama((30, 576, 1536, 9, 3, len(tokenizer)), compute_dtype(device), device, std=0.1)
        settings = EvalSettings(tasks=["merger_arithmetic"], limit=40)
        ours = evaluate(make_lm(settings, model, tokenizer), settings, show_progress=False)
        ref_settings = settings.model_copy(update={"backend": "hf", "batch_size": 1})
        ref = evaluate(make_lm(ref_settings, model, tokenizer), ref_settings, show_progress=False)
        diffs = [abs(x - y) for a, b in zip(ours.items, ref.items) for x, y in zip(a.lls, b.lls)]
        differ = sum(
            a.metrics != b.metrics
            for a, b in zip(ours.items, ref.items)
            if sorted(a.lls)[-1] - sorted(a.lls)[-2] > 0.05  # near ties may flip in bf16
        )
        return {
            "status": "pass" if max(diffs) < TOLERANCE and differ == 0 else "fail",
            "dtype": str(model.dtype).removeprefix("torch."),
            "requests": len(diffs),
            "max_abs_ll_diff": round(max(diffs), 5),
            "mean_abs_ll_diff": round(sum(diffs) / len(diffs), 5),
            "items_metric_differs": differ,
            "tolerance": TOLERANCE,
        }

    for name, shape in SHAPES.items():

        @check(f"scoring-{name}", skip)
        def _scoring(shape=shape):
            if not cuda:
                return {"status": "skipped", "why": "no CUDA device"}
            from transformers import AutoTokenizer

            from merger.evaluate import scoring
            from merger.evaluate.lm import MergerLM
            from merger.evaluate.scoring import Encoded, score_items, token_budget

            free, total = torch.cuda.mem_get_info()
            ballast = torch.empty(max(0, int(free - args.card_gib * 2**30)), dtype=torch.uint8, device="cuda")
            model = random_llama(shape, torch.bfloat16, "cuda")
            weights = torch.cuda.memory_allocated() - ballast.numel()
            g = torch.Generator().manual_seed(0)

            def tokens(n):
                return torch.randint(3, shape[5], (n,), generator=g).tolist()

            items = []
            for _ in range(16):
                prefix = tokens(1800)
                items.append([])
                for _ in range(4):
                    cont = tokens(24)
                    inp = (prefix + cont)[:-1]
                    items[-1].append(Encoded(inp=inp, cont=cont, ctx_len=len(inp) - len(cont) + 1))
            budget = token_budget(model, 1800 + 4 * 24, 65536)
            halvings = []
            real = scoring.score_group

            def counted(model, batch, prefixes, pad_id):
                try:
                    return real(model, batch, prefixes, pad_id)
                except torch.OutOfMemoryError:
                    halvings.append(len(batch))
                    raise

            scoring.score_group = counted
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
            started = time.perf_counter()
            score_items(model, items, 0, budget)
            torch.cuda.synchronize()
            seconds = time.perf_counter() - started
            scoring.score_group = real
            score_peak = torch.cuda.max_memory_allocated() - ballast.numel()

            tokenizer = AutoTokenizer.from_pretrained(tiny(work, f"tok-{shape[0]}-{shape[5]}", 0))
            lm = MergerLM(model=model, tokenizer=tokenizer, max_gen_toks=128)
            context = " ".join(["Paris is the capital of France."] * 130)  # ~1,000 tokens of the tiny tokenizer

            class Request:
                def __init__(self):
                    self.args = (context, {"until": ["<never>"], "max_gen_toks": 128, "do_sample": False})

            requests = [Request() for _ in range(64)]
            batch = lm._rows([len(lm.encoder.encode(context))] * len(requests), 128)[0]
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
            started = time.perf_counter()
            lm.generate_until(requests[: 2 * batch])
            torch.cuda.synchronize()
            gen_seconds = time.perf_counter() - started
            gen_peak = torch.cuda.max_memory_allocated() - ballast.numel()
            static = lm.static_cache
            del model, lm, ballast
            release()
            return {
                "card_gib": args.card_gib,
                "weights_gib": round(weights / 2**30, 2),
                "token_budget": budget,
                "items_per_s": round(len(items) / seconds, 2),
                "score_peak_gib": round(score_peak / 2**30, 2),
                "oom_halvings": len(halvings),
                "generate_batch": batch,
                "static_cache": static,
                "generated_tokens_per_s": round(2 * batch * 128 / gen_seconds, 1),
                "generate_peak_gib": round(gen_peak / 2**30, 2),
            }

    def dpo_run(qlora: bool):
        from merger.config.train import DPOSettings
        from merger.train.run import train

        base = tiny(work, f"dpo-base-{qlora}", 3)
        settings = DPOSettings(
            data=str(REPO / "merge_recipes" / "data" / "demo_arithmetic_prefs.jsonl"),
            max_steps=4,
            batch_size=2,
            max_length=128,
            qlora=qlora,
            against=[],
        )
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        started = time.perf_counter()
        run = train(base, "dpo", settings, work / f"dpo-out-{qlora}", {}, device=device, show_progress=False)
        seconds = time.perf_counter() - started
        figures = {"steps": run.steps, "steps_per_s": round(run.steps / seconds, 2), "device": run.device}
        if cuda:
            release()
            figures["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
            figures["left_allocated_mib"] = round((torch.cuda.memory_allocated() - before) / 2**20, 1)
        return figures

    @check("dpo", skip)
    def _dpo():
        return dpo_run(False)

    @check("qlora", skip)
    def _qlora():
        import importlib.util

        if not cuda or importlib.util.find_spec("bitsandbytes") is None:
            return {"status": "skipped", "why": "needs CUDA and bitsandbytes (.whl-qlora/)"}
        return dpo_run(True)

    def recipe(ts: list[float]) -> Path:
        from test_sweep import slerp_recipe, write

        a, b = tiny(work, "merge-a", 1), tiny(work, "merge-b", 2)
        body = slerp_recipe(a, b, 4, ts, eval={"tasks": ["merger_arithmetic"], "limit": 8})
        body["merge"]["dtype"] = "bfloat16"
        return write(work / f"slerp-{len(ts)}.yaml", body)

    @check("merge-digest", skip)
    def _merge():
        from merger.config.recipe import expand
        from merger.core.digest import folder_digest
        from merger.merge.run import merge_in_memory, merge_to_disk

        [candidate] = expand(recipe([0.3]))
        merged = merge_in_memory(candidate, device=device, digest=True)
        where = str(next(merged.model.parameters()).device)
        disk = merge_to_disk(candidate, work / "merged", device=device, quiet=True)
        same = merged.digest == folder_digest(disk)
        return {"status": "pass" if same else "fail", "in_memory_on": where, "digests_equal": same}

    @check("sweep", skip)
    def _sweep():
        from merger.flow.options import RunOptions
        from merger.sweep.run import run_sweep

        out = work / "sweep"
        started = time.perf_counter()
        run_sweep([recipe([0.0, 0.5, 1.0])], out, RunOptions(device))
        rows = json.loads((out / "leaderboard.json").read_text())
        return {"candidates": len(rows), "seconds_per_candidate": round((time.perf_counter() - started) / 3, 2)}

    failed = [n for n, r in results.items() if r["status"] == "fail"]
    print(f"{len(results) - len(failed)} passed or skipped, {len(failed)} failed: {', '.join(failed) or '-'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
