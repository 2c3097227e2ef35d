"""The `merger` command: a thin typer layer, one verb per stage. All work lives in the modules it calls."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Callable, List, Optional, TypeVar

import typer
import yaml
from rich.console import Console
from rich.table import Table

from merger.errors import UserError

app = typer.Typer(
    help="Declarative merge sweeps for open LLMs: mergekit merges, DPO, lm-eval-identical quick scoring.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(help="Prepare the bundled demo models.", no_args_is_help=True)
app.add_typer(models_app, name="models")

out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable)


def user_errors(fn: F) -> F:
    """Each user-fixable problem becomes one line on stderr and exit code 2: no traceback, ever."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            for problem in exc.problems:
                err.print(f"error: {problem}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _candidates_table(candidates, extra: Optional[dict[str, list[str]]] = None) -> Table:
    table = Table(title="Candidates")
    for column in ("recipe", "id", "method", "sweep point", "models", "layers", *(extra or {})):
        table.add_column(column)
    from merger.recipe import output_layers
    from merger.validate import model_refs

    for i, c in enumerate(candidates):
        models = {ref for field, ref in model_refs(c.merge) if not field.endswith("tokenizer_source")}
        point = ", ".join(f"{k}={json.dumps(v)}" for k, v in c.params.items()) or "-"
        table.add_row(Path(c.recipe_path).name, c.id, c.merge.get("merge_method", "?"), point,
                      str(len(models)), str(output_layers(c.merge) or "as inputs"), *(values[i] for values in (extra or {}).values()))
    return table


@app.command()
@user_errors
def validate(
    recipes: List[Path] = typer.Argument(..., help="Recipe files (merger recipes or plain mergekit configs)."),
    show_config: bool = typer.Option(False, "--show-config", help="Print each candidate's resolved mergekit config."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Accept models that ship only pickled weights."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Accept models that need custom code."),
) -> None:
    """Parse, expand and check every candidate without merging anything."""
    from merger.validate import validate_recipes

    candidates, report = validate_recipes([str(r) for r in recipes], allow_pickle, trust_remote_code)
    if candidates:
        out.print(_candidates_table(candidates))
    if show_config:
        for c in candidates:
            out.rule(f"{c.id}  ({Path(c.recipe_path).name})")
            out.print(yaml.safe_dump(c.merge, sort_keys=False).rstrip(), markup=False, highlight=False)
    for note in report.notes:
        err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    if report.problems:
        raise UserError(report.problems)
    out.print(f"[green]{len(candidates)} candidate(s) valid[/green]")


@app.command()
@user_errors
def merge(
    recipe: Path = typer.Argument(..., help="Recipe file."),
    out_dir: Path = typer.Option(..., "--out", help="Output folder (a Hugging Face model folder)."),
    candidate: Optional[str] = typer.Option(None, "--candidate", help="Candidate id, when the recipe sweeps."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    shard_size: str = typer.Option("5GB", "--shard-size", help="Largest safetensors shard, e.g. 5GB."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty output folder."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Accept models that ship only pickled weights."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run models' custom code."),
) -> None:
    """Merge one candidate of a recipe through mergekit, atomically."""
    from merger.device import resolve_device
    from merger.merging import ensure_target_free, merge_to_disk, parse_size
    from merger.validate import require_valid

    # Cheap argument checks first, so a typo costs nothing.
    parse_size(shard_size)
    resolve_device(device)
    ensure_target_free(out_dir, force)
    candidates = require_valid([str(recipe)], allow_pickle, trust_remote_code)
    if candidate is not None:
        chosen = [c for c in candidates if c.id == candidate]
        if not chosen:
            ids = ", ".join(c.id for c in candidates)
            raise UserError.one(str(recipe), "--candidate", f"no candidate '{candidate}'; this recipe has: {ids}")
    elif len(candidates) > 1:
        ids = ", ".join(c.id for c in candidates)
        raise UserError.one(str(recipe), "sweep", f"{len(candidates)} candidates; pick one with --candidate ({ids})")
    else:
        chosen = candidates
    c = chosen[0]
    out.print(f"Merging [bold]{c.id}[/bold] ({c.merge['merge_method']}) from {recipe} -> {out_dir}")
    merge_to_disk(c, out_dir, device=device, shard_size=shard_size, force=force,
                  trust_remote_code=trust_remote_code)
    out.print(f"[green]wrote[/green] {out_dir}")


def _parse_fewshot(value: Optional[str]) -> Optional[int | dict[str, int]]:
    """`5` for every task, or `arc_challenge=25,hellaswag=10` per task."""
    if value is None:
        return None
    try:
        if "=" not in value:
            return int(value)
        return {k.strip(): int(v) for k, v in (part.split("=", 1) for part in value.split(","))}
    except ValueError:
        raise UserError.one("--num-fewshot", "", f"'{value}' is not a number or task=number list") from None


@app.command("eval")
@user_errors
def eval_(
    model_dir: Path = typer.Argument(..., help="A Hugging Face model folder (safetensors)."),
    tasks: str = typer.Option("arithmetic", "--tasks", help="Comma-separated: arc_challenge, hellaswag, mmlu, "
                              "truthfulqa_mc2, winogrande, gsm8k, arithmetic."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Score a seeded sample of N items per task."),
    num_fewshot: Optional[str] = typer.Option(None, "--num-fewshot", help="K, or task=K,... (default: leaderboard's)."),
    seed: int = typer.Option(1234, "--seed", help="Seed of the --limit sample."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Local JSONL tasks (else $MERGER_DATA_DIR, else the hub)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the summary as JSON."),
    items_out: Optional[Path] = typer.Option(None, "--items", help="Write one JSON line per scored item."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Items per batch (default: by memory)."),
) -> None:
    """Score a model on quick leaderboard subsets, with lm-eval's prompts and metrics."""
    from merger.evaluate.evaluator import evaluate, parse_tasks
    from merger.evaluate.model import load_model
    from merger.evaluate.report import results_table, write_items, write_summary

    names = parse_tasks(tasks)
    fewshot = _parse_fewshot(num_fewshot)
    model, tokenizer = load_model(model_dir, device)
    report = evaluate(model, tokenizer, names, limit=limit, num_fewshot=fewshot, seed=seed, data=data_dir,
                      batch_size=batch_size)
    out.print(results_table(report, title=str(model_dir)))
    if json_out:
        write_summary(report, json_out)
    if items_out:
        write_items(report, items_out)


@app.command()
@user_errors
def dpo(
    model_dir: Path = typer.Argument(..., help="The model to refine (a Hugging Face folder)."),
    data: str = typer.Option(..., "--data", help="Preference pairs: a JSONL file or a hub dataset id."),
    out_dir: Path = typer.Option(..., "--out", help="Output folder: the refined model, LoRA merged in."),
    full: bool = typer.Option(False, "--full", help="Full fine-tuning instead of LoRA."),
    qlora: bool = typer.Option(False, "--qlora", help="4-bit QLoRA (CUDA and bitsandbytes)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps"),
    epochs: float = typer.Option(1.0, "--epochs"),
    beta: float = typer.Option(0.1, "--beta"),
    loss_type: str = typer.Option("sigmoid", "--loss-type"),
    lr: Optional[float] = typer.Option(None, "--lr", help="Default 5e-5 with LoRA, 5e-6 full."),
    lora_r: int = typer.Option(16, "--lora-r"),
    lora_alpha: int = typer.Option(32, "--lora-alpha"),
    batch_size: int = typer.Option(2, "--batch-size"),
    grad_accum: int = typer.Option(1, "--grad-accum"),
    max_length: int = typer.Option(1024, "--max-length"),
    overlong: str = typer.Option("drop", "--overlong", help="drop or truncate pairs over --max-length."),
    precompute_ref_log_probs: bool = typer.Option(False, "--precompute-ref-log-probs"),
    decontaminate: bool = typer.Option(False, "--decontaminate", help="Drop pairs that overlap eval items."),
    against: Optional[str] = typer.Option(None, "--against", help="Eval tasks to check (default: all available)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Eval data for the contamination check."),
    seed: int = typer.Option(42, "--seed"),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty output folder."),
) -> None:
    """Refine a model with DPO (trl), LoRA by default, after checking the data and its contamination."""
    from merger.dpo import DPOSettings, run_dpo

    values = dict(data=data, full=full, qlora=qlora, max_steps=max_steps, epochs=epochs, beta=beta,
                  loss_type=loss_type, lr=lr, lora_r=lora_r, lora_alpha=lora_alpha, batch_size=batch_size,
                  grad_accum=grad_accum, max_length=max_length, overlong=overlong,
                  precompute_ref_log_probs=precompute_ref_log_probs, decontaminate=decontaminate,
                  against=[t.strip() for t in against.split(",")] if against else None,
                  data_dir=str(data_dir) if data_dir else None, seed=seed)
    settings = DPOSettings.parse(values, "merger dpo")
    run_dpo(model_dir, settings, out_dir, device=device, force=force)
    summary = json.loads((out_dir / "merger_dpo.json").read_text())
    table = Table(title=f"DPO -> {out_dir}")
    table.add_column("what")
    table.add_column("value", justify="right")
    data_facts, contamination = summary["data"], summary["decontamination"]
    table.add_row("pairs read / used", f"{data_facts['pairs_read']} / {data_facts['pairs_used']}")
    for reason, count in data_facts["dropped"].items():
        table.add_row(f"dropped: {reason}", str(count))
    table.add_row("truncated", str(data_facts["truncated"]))
    table.add_row("contaminated (13-gram) / dropped", f"{contamination['matched']} / {contamination['dropped']}")
    table.add_row("checked against", ", ".join(contamination["against"]))
    table.add_row("steps", str(summary["steps"]))
    out.print(table)


@app.command()
@user_errors
def sweep(
    recipes: List[Path] = typer.Argument(None, help="Recipe files."),
    out_dir: Path = typer.Option(..., "--out", help="Sweep folder: journal, candidates, best, leaderboard."),
    keep: Optional[int] = typer.Option(None, "--keep", min=1, help="Keep the K best candidates' weights."),
    fresh: bool = typer.Option(False, "--fresh", help="Forget earlier results in --out and start over."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Reuse finished stages (the default)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and exit."),
    report: bool = typer.Option(False, "--report", help="Only redraw the leaderboard and plots from the journal."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
) -> None:
    """Merge, refine, score and rank every candidate of the recipes; keep the best. Resumable."""
    import shutil

    from merger.device import resolve_device
    from merger.validate import require_valid

    if report:
        from merger.journal import Journal
        from merger.leaderboard import write_reports

        if not (out_dir / "journal.sqlite").exists() or not (out_dir / "sweep.json").exists():
            raise UserError.one(str(out_dir), "--report", "no finished sweep here to report on")
        journal = Journal(out_dir)
        try:
            write_reports(journal, out_dir)
        finally:
            journal.close()
        return
    if not recipes:
        raise UserError.one("merger sweep", "RECIPE", "give at least one recipe file")
    resolve_device(device)
    candidates = require_valid([str(r) for r in recipes])
    if dry_run:
        from merger.sweep import sweep_settings, weights_bytes

        evals, select = sweep_settings(candidates)
        out.print(_candidates_table(candidates, {
            "stages": ["merge -> dpo -> eval" if c.dpo else "merge (in memory) -> eval" for c in candidates],
            "disk if kept": [f"{weights_bytes(c) / 1e9:.2f} GB" for c in candidates],
        }))
        out.print(f"eval: {', '.join(evals.tasks)} on {evals.limit or 'all'} items; select: {select.metric}, "
                  f"{select.strategy}, keep {keep or select.keep}")
        return
    if fresh or not resume:
        for name in ("journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm", "candidates", "best"):
            target = out_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    from merger.sweep import run_sweep

    run_sweep(candidates, out_dir, device=device, keep=keep)
    out.print(f"[green]best:[/green] {out_dir / 'best'}")


@app.command()
@user_errors
def card(
    model_dir: Path = typer.Argument(..., help="A model folder made by merger (merge, DPO, sweep best)."),
    scores: Optional[Path] = typer.Option(None, "--scores", help="A `merger eval --json` summary of this model."),
) -> None:
    """Write README.md: front matter with base models, tags, license and model-index, then recipe, DPO, scores."""
    from pydantic import ValidationError

    from merger.card import scores_from_eval, write_card

    if not (model_dir / "config.json").exists():
        raise UserError.one(str(model_dir), "config.json", "missing: not a Hugging Face model folder")
    if scores is not None:
        try:
            found = scores_from_eval(scores)
        except (OSError, ValueError, KeyError, ValidationError) as exc:
            raise UserError.one(str(scores), "--scores", f"not a `merger eval --json` summary ({exc})") from None
        (model_dir / "merger_scores.json").write_text(found.model_dump_json(indent=2) + "\n")
    for warning in write_card(model_dir):
        err.print(f"warning: {warning}", markup=False, highlight=False)
    out.print(f"wrote {model_dir / 'README.md'}")


@app.command("export")
@user_errors
def export_(
    model_dir: Path = typer.Argument(..., help="The model folder to export."),
    out_dir: Path = typer.Option(..., "--out", help="The upload-ready folder."),
    dtype: str = typer.Option("bf16", "--dtype", help="bf16, fp16 or fp32."),
    shard_size: str = typer.Option("5GB", "--shard-size", help="Largest safetensors shard."),
    push_to_hub: Optional[str] = typer.Option(None, "--push-to-hub", help="Upload to this Hub repo."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty output folder."),
) -> None:
    """Write an upload-ready copy (safetensors shards, tokenizer, chat template, card); optionally upload it."""
    from merger.export import check_push, export, push

    if push_to_hub:
        check_push(push_to_hub)
    export(model_dir, out_dir, dtype=dtype, shard_size=shard_size, force=force)
    out.print(f"wrote {out_dir}")
    if push_to_hub:
        out.print(f"uploaded: {push(out_dir, push_to_hub)}")


@app.command()
@user_errors
def preflight(model_dir: Path = typer.Argument(..., help="The model folder to check before submitting.")) -> None:
    """Run the checks a leaderboard submission fails on; exit 2 when any fails."""
    from merger.errors import Problem
    from merger.preflight import run_checks

    if not (model_dir / "config.json").exists():
        raise UserError.one(str(model_dir), "config.json", "missing: not a Hugging Face model folder")
    checks = run_checks(model_dir)
    table = Table(title=f"Preflight: {model_dir}")
    for column in ("check", "result", "detail"):
        table.add_column(column)
    colors = {"pass": "green", "fail": "red", "skip": "yellow"}
    for check in checks:
        table.add_row(check.name, f"[{colors[check.status]}]{check.status}[/]", check.detail)
    out.print(table)
    failed = [Problem(str(model_dir), c.name, c.detail) for c in checks if c.status == "fail"]
    if failed:
        raise UserError(failed)


@models_app.command("prepare")
@user_errors
def models_prepare(
    name: str = typer.Argument("smollm2", help="Demo model name (smollm2)."),
    force: bool = typer.Option(False, "--force", help="Convert again even when cached."),
    link: Optional[Path] = typer.Option(None, "--link", help="Also link the folder into this directory."),
) -> None:
    """Convert a bundled demo model to a cached HF folder; prints the folder as the last line."""
    from merger.models import link_into, prepare

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = prepare(name, force=force)
    if link is not None:
        path = link_into(path, link)
    print(path)


if __name__ == "__main__":
    app()
