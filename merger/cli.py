"""The `merger` command: each verb parses its arguments, makes one call into the library, and renders the result."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console

from merger import flags, render
from merger.config.recipe import EvalSettings, ExecuteSettings
from merger.config.train import DPOSettings, SFTSettings
from merger.core import demo
from merger.core.errors import Problem, UserError
from merger.core.hf import cache_root
from merger.core.logs import library_output
from merger.evaluate.evaluator import evaluate_folder
from merger.evaluate.report import results_table
from merger.flow import checks, verbs
from merger.flow.options import RunOptions
from merger.publish import card as cards
from merger.publish.export import export as export_model
from merger.publish.preflight import run_checks
from merger.sweep import leaderboard, plan

app = typer.Typer(
    help="Declarative merge sweeps for open LLMs: mergekit merges, trl training, lm-eval-identical quick scoring.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(help="Prepare the bundled demo models.", no_args_is_help=True)
app.add_typer(models_app, name="models")

out = Console()
err = Console(stderr=True)


def command(
    fn: Callable,
    log_dir: Callable[[dict], Path | None] = lambda kwargs: None,
    name: str | None = None,
    group: typer.Typer = app,
) -> Callable:
    """A verb: each user-fixable problem becomes one line on stderr and exit code 2, never a traceback; library
    output goes to `merger.log` in the verb's work folder (`log_dir`), else in merger's cache, unless `--verbose`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        folder = log_dir(kwargs)
        log = Path(folder) / "merger.log" if folder else cache_root() / "logs" / f"{name or fn.__name__}.log"
        try:
            with library_output(log, kwargs.get("verbose", False)):
                return fn(*args, **kwargs)
        except UserError as exc:
            for problem in exc.problems:
                err.print(f"error: {problem}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return group.command(name)(wrapper)


def validate(
    recipes: list[Path] = typer.Argument(..., help="Recipe files (merger recipes or plain mergekit configs)."),
    show_config: bool = typer.Option(False, "--show-config", help="Print each candidate's resolved mergekit config."),
    allow_pickle: bool = flags.ALLOW_PICKLE,
    trust_remote_code: bool = flags.TRUST_CODE,
    strict: bool = flags.STRICT,
    verbose: bool = flags.VERBOSE,
) -> None:
    """Parse, expand and check every candidate without merging anything."""
    candidates, report = checks.validate_recipes([str(r) for r in recipes], allow_pickle, trust_remote_code, strict)
    if candidates:
        out.print(render.candidates_table(candidates))
    if show_config:
        render.show_configs(out, candidates)
    render.notes(err, report.notes)
    if report.problems:
        raise UserError(report.problems)
    out.print(f"[green]{len(candidates)} candidate(s) valid[/green]")


def merge(
    recipe: Path = typer.Argument(..., help="Recipe file."),
    out_dir: Path = typer.Option(..., "--out", help="Output folder (a Hugging Face model folder)."),
    candidate: str | None = typer.Option(None, "--candidate", help="Candidate id, when the recipe sweeps."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    shard_size: str = flags.SHARD_SIZE,
    force: bool = flags.FORCE,
    allow_pickle: bool = flags.ALLOW_PICKLE,
    trust_remote_code: bool = flags.TRUST_CODE,
    strict: bool = flags.STRICT,
    random_seed: int | None = flags.SEED,
    lora_merge_cache: Path | None = flags.LORA_CACHE,
    verbose: bool = flags.VERBOSE,
) -> None:
    """Merge one candidate of a recipe through mergekit, atomically."""
    with err.status(f"Merging {recipe} -> {out_dir}"):
        options = RunOptions(device, lora_merge_cache, trust_remote_code, allow_pickle, strict, random_seed)
        c = verbs.merge_one(recipe, out_dir, options, candidate, shard_size, force)
    render.notes(err, c.notes)
    out.print(f"[green]wrote[/green] {out_dir} (candidate [bold]{c.id}[/bold], {c.merge['merge_method']})")


def eval_(
    model_dir: Path = typer.Argument(..., help="A Hugging Face model folder (safetensors)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the summary as JSON (lm-eval's metric keys)."),
    items_out: Path | None = typer.Option(None, "--items", help="Write one JSON line per scored item."),
    device: str = flags.DEVICE,
    no_cache: bool = flags.NO_CACHE,
    verbose: bool = flags.VERBOSE,
    **settings,
) -> None:
    """Score a model on lm-eval tasks (any task, group, tag or preset) with merger's fast backend."""
    settings, cache = eval_settings(settings), flags.item_cache(no_cache)
    report = evaluate_folder(model_dir, settings, device=device, json_out=json_out, items_out=items_out, cache=cache)
    out.print(results_table(report, title=str(model_dir)))


eval_settings = flags.with_settings_flags(eval_, EvalSettings)


def trainer_verb(name: str, kind: str | None, settings_model: type, doc: str) -> Callable:
    """`merger train` and `merger dpo`: the same verb over their trainer's settings model."""

    def verb(
        model_dir: Path = typer.Argument(..., help="The model to train (a Hugging Face folder)."),
        out_dir: Path = typer.Option(..., "--out", help="Output folder: the trained model, LoRA merged in."),
        device: str = flags.DEVICE,
        force: bool = flags.FORCE,
        verbose: bool = flags.VERBOSE,
        **settings,
    ) -> None:
        run = verbs.train_model(model_dir, kind, build(settings), out_dir, device=device, force=force)
        out.print(render.train_table(run, out_dir))

    verb.__name__, verb.__doc__ = name, doc
    build = flags.with_settings_flags(verb, settings_model)
    return verb


train = trainer_verb(
    "train",
    None,
    SFTSettings,
    'Continued pretraining ({"text"} rows) or SFT (chat rows) with trl, LoRA by default, optionally distilled from '
    "a teacher; the data checked for contamination, held-out perplexity measured before and after.",
)
dpo = trainer_verb(
    "dpo",
    "dpo",
    DPOSettings,
    "Refine a model with DPO (trl), LoRA by default, after checking the data and its contamination.",
)


def sweep(
    recipes: list[Path] = typer.Argument(..., help="Recipe files."),
    out_dir: Path = typer.Option(..., "--out", help="Sweep folder: journal, candidates, best, leaderboard."),
    keep: int | None = typer.Option(None, "--keep", min=1, help="Keep the K best candidates' weights."),
    fresh: bool = typer.Option(False, "--fresh", help="Forget earlier results in --out and start over."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and exit."),
    device: str = flags.DEVICE,
    strict: bool = flags.STRICT,
    random_seed: int | None = flags.SEED,
    lora_merge_cache: Path | None = flags.LORA_CACHE,
    no_cache: bool = flags.NO_CACHE,
    verbose: bool = flags.VERBOSE,
    **settings,
) -> None:
    """Merge, refine, score and rank every candidate of the recipes; keep the best. Resumable."""
    execute = execute_settings(settings)
    if dry_run:
        return render.plan(out, plan.plan_sweep(recipes, keep, device, strict, random_seed, execute, dry_run=True))
    from merger.sweep.run import run_sweep

    cache = flags.item_cache(no_cache)
    options = RunOptions(device, lora_merge_cache, strict=strict, random_seed=random_seed, cache=cache)
    best = run_sweep(recipes, out_dir, options, keep=keep, fresh=fresh, execute=execute)
    out.print(f"[green]best:[/green] {best}")


execute_settings = flags.with_settings_flags(sweep, ExecuteSettings, defaults=False)


def report(out_dir: Path = typer.Argument(..., help="A sweep folder."), verbose: bool = flags.VERBOSE) -> None:
    """Redraw a sweep's leaderboard (table, leaderboard.md/json, report.png) from its journal."""
    leaderboard.report(out_dir)


def card(
    model_dir: Path = typer.Argument(..., help="A model folder (merge, DPO, sweep best, or any other)."),
    scores: Path | None = typer.Option(None, "--scores", help="A `merger eval --json` summary of this model."),
    verbose: bool = flags.VERBOSE,
) -> None:
    """Write README.md: front matter with base models, tags, license and model-index, then recipe, DPO, scores."""
    for warning in cards.card(model_dir, scores):
        err.print(f"warning: {warning}", markup=False, highlight=False)
    out.print(f"wrote {model_dir / 'README.md'}")


def export(
    model_dir: Path = typer.Argument(..., help="The model folder to export."),
    out_dir: Path = typer.Option(..., "--out", help="The upload-ready folder."),
    dtype: str = typer.Option("bf16", "--dtype", help="bf16, fp16 or fp32."),
    shard_size: str = flags.SHARD_SIZE,
    push_to_hub: str | None = typer.Option(None, "--push-to-hub", help="Upload to this Hub repo."),
    eval_results: bool = typer.Option(False, "--eval-results", help="Add .eval_results/ for benchmark scores."),
    force: bool = flags.FORCE,
    verbose: bool = flags.VERBOSE,
) -> None:
    """Write an upload-ready copy (safetensors shards, tokenizer, chat template, card); optionally upload it."""
    url, skipped = export_model(model_dir, out_dir, dtype, shard_size, force, push_to_hub, eval_results)
    for reason in skipped:
        out.print(f"not in .eval_results: {reason}", markup=False)
    out.print(f"wrote {out_dir}" + (f"\nuploaded: {url}" if url else ""))


def preflight(
    model_dir: Path = typer.Argument(..., help="The model folder to check."), verbose: bool = flags.VERBOSE
) -> None:
    """Run the checks a leaderboard submission fails on; exit 2 when any fails."""
    checks = run_checks(model_dir)
    out.print(render.checks_table(checks, model_dir))
    failed = [Problem(str(model_dir), c.name, c.detail) for c in checks if c.status == "fail"]
    if failed:
        raise UserError(failed)


def models_prepare(
    name: str = typer.Argument("smollm2", help="Demo model name (smollm2)."),
    force: bool = typer.Option(False, "--force", help="Convert again even when cached."),
    link: Path | None = typer.Option(None, "--link", help="Also link the folder into this directory."),
    verbose: bool = flags.VERBOSE,
) -> None:
    """Convert a bundled demo model to a cached HF folder; prints the folder as the last line."""
    print(demo.prepare(name, force=force, link=link))


for verb in (validate, merge, train, dpo, report, card, export, preflight):
    command(verb)
command(sweep, log_dir=lambda kwargs: None if kwargs["dry_run"] else kwargs["out_dir"])

command(eval_, name="eval")
command(models_prepare, name="prepare", group=models_app)

if __name__ == "__main__":
    app()
