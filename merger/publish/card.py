"""The model card a submission needs: YAML front matter (base models, tags, license, datasets, model-index) and a
body with the merge recipe, each training step's settings and data ("how it was made"), and the quick-eval table.

A card says only what is true of its folder. A merge (a `mergekit_config.yml` beside the weights) is called one,
with its license derived from its inputs' cards; any other folder keeps what its existing card states (license,
base_model, datasets, and its text). Scores come from `merger_scores.json` (`Scores`), which says where they were
measured: a sweep's journal or a `merger eval --json` file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from merger.config.recipe import input_models
from merger.config.results import EvalSummary, Scores, TaskResult, TrainHistory, TrainRun
from merger.config.train import LABELS
from merger.core.atomic import atomic_write
from merger.core.errors import UserError
from merger.core.hf import card_body, front_matter, hub_card, require_model_folder
from merger.publish.licenses import derive_license, restrictiveness

MERGER_TAG = "merger"
ORIGINAL = "## Original model card"


def inputs_of(model_dir: Path) -> list[str]:
    """The models this one was merged from (a trained output carries its merge's config along); [] for no merge."""
    config_path = Path(model_dir) / "mergekit_config.yml"
    if not config_path.exists():
        return []
    return input_models(yaml.safe_load(config_path.read_text(encoding="utf-8")) or {})


def _as_list(value: Any) -> list[str]:
    return [str(v) for v in (value if isinstance(value, list) else [value] if value else [])]


def _read(model_dir: Path) -> tuple[list[TrainRun], Scores | None]:
    steps_path, scores_path = model_dir / "merger_train.json", model_dir / "merger_scores.json"
    steps = TrainHistory.model_validate_json(steps_path.read_text()).root if steps_path.exists() else []
    scores = Scores.model_validate_json(scores_path.read_text()) if scores_path.exists() else None
    return steps, scores


def _license(refs: list[str], cards: dict[str, dict], existing: dict) -> tuple[str, list[str]]:
    """A merge's license comes from its inputs; anything else keeps the license its card states."""
    stated = str(existing["license"]) if existing.get("license") else None
    if not refs:
        return (stated, []) if stated else ("other", ["no license stated in the existing card"])
    derived, warnings = derive_license(
        {ref: (str(c["license"]) if c.get("license") else None) for ref, c in cards.items()}
    )
    if derived == "other" and stated and stated != "other":
        return stated, warnings + [f"inputs' licenses are unknown; keeping the card's own '{stated}'"]
    if (
        stated
        and restrictiveness(stated) is not None
        and restrictiveness(derived) is not None
        and restrictiveness(stated) > restrictiveness(derived)
    ):
        return stated, warnings  # the author chose stricter terms than the inputs require
    return derived, warnings


def build_card(model_dir: Path, name: str | None = None) -> tuple[str, list[str]]:
    """(README.md text, warnings); `name` is the model's name when the folder is still a temporary one."""
    model_dir = Path(model_dir)
    name = name or model_dir.name
    existing = front_matter(model_dir / "README.md")
    own_card = MERGER_TAG in _as_list(existing.get("tags"))  # written by merger: regenerated, not kept
    refs = inputs_of(model_dir)
    steps, scores = _read(model_dir)
    kinds = list(dict.fromkeys(step.kind for step in steps))
    cards = {ref: hub_card(ref) for ref in refs}
    license_id, warnings = _license(refs, cards, {} if own_card and refs else existing)

    if refs:
        base_models = list(
            dict.fromkeys(b for ref, c in cards.items() for b in (_as_list(c.get("base_model")) or [ref]))
        )
        tags = ["merge", "mergekit", MERGER_TAG]
    else:
        base_models = _as_list(existing.get("base_model")) or ([steps[0].base_model] if steps else [])
        tags = [t for t in _as_list(existing.get("tags")) if t not in (*LABELS, "trl", MERGER_TAG)] + [MERGER_TAG]
    tags += [*kinds, "trl"] if steps else []
    meta: dict[str, Any] = {}
    if base_models:
        meta["base_model"] = base_models
    meta.update(
        {"library_name": "transformers", "tags": tags, "license": license_id, "pipeline_tag": "text-generation"}
    )
    datasets = _as_list(existing.get("datasets"))
    datasets += [step.data.source for step in steps if not Path(step.data.source).exists()]
    if datasets:
        meta["datasets"] = list(dict.fromkeys(datasets))
    if scores:
        meta["model-index"] = [{"name": name, "results": [_result(t, r) for t, r in scores.tasks.items()]}]

    body = [f"# {name}", ""]
    if refs:
        body += [
            "A merge of pre-trained language models, made with [mergekit](https://github.com/arcee-ai/mergekit) "
            "through merger" + (f", then trained with trl ({_chain(steps)})." if steps else "."),
            "",
            "## Merge recipe",
            "",
            "Merged from: " + ", ".join(f"`{r}`" for r in refs),
            "",
            "```yaml",
            (model_dir / "mergekit_config.yml").read_text().rstrip(),
            "```",
            "",
        ]
    elif steps:
        body += [f"`{steps[0].base_model}` trained with trl by merger ({_chain(steps)}).", ""]
    if steps:
        body += _training_section(steps)
    if scores:
        body += _scores_section(scores)
    if refs or steps:
        body += _reproduce(model_dir, refs, steps)
    original = card_body(model_dir / "README.md")
    if own_card:  # a card merger wrote keeps the original text it carried
        original = original.split(ORIGINAL, 1)[1].strip() if ORIGINAL in original else ""
    if original:
        body += [ORIGINAL, "", original, ""]
    text = "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n" + "\n".join(body)
    return text, warnings


def _chain(steps: list[TrainRun]) -> str:
    return " -> ".join(LABELS[step.kind] for step in steps)


def _training_section(steps: list[TrainRun]) -> list[str]:
    """How it was made: one paragraph per training step, in order."""
    lines = ["## Training", ""]
    for number, run in enumerate(steps, 1):
        d, c, s = run.data, run.decontamination, run.settings
        method = "full fine-tuning" if s.full else f"{'QLoRA' if s.qlora else 'LoRA'} r={s.lora_r} alpha={s.lora_alpha}"
        method += f" on layers {s.layers}" if s.layers else ""
        method += (
            f", distilled from `{run.teacher}` (KL weight {s.kl_weight}, T={s.temperature})" if run.teacher else ""
        )
        if run.kind == "dpo":
            method += f"; beta {s.beta}, loss `{s.loss_type}`"
        dropped = ", ".join(f"{reason}: {n}" for reason, n in d.dropped.items()) or "none"
        lines += [
            f"{number}. **{LABELS[run.kind]}** of `{run.base_model}`: {method}; learning rate {run.learning_rate}, "
            f"{run.steps} steps, max length {s.max_length}.",
            f"   Data: `{d.source}` (fingerprint `{d.fingerprint}`), {d.rows_used} of {d.rows_read} rows used; "
            f"dropped: {dropped}; truncated: {d.truncated}. Decontamination (13-gram overlap with the test items of "
            f"{', '.join(c.against) or 'no tasks'}): {c.checked} checked, {c.matched} matched, {c.dropped} dropped.",
        ]
        if run.perplexity:
            p = run.perplexity
            lines.append(
                f"   Held-out perplexity on `{p.source}` ({p.texts} texts): {p.before:.3f} before, {p.after:.3f} after."
            )
    return lines + [""]


def _scores_section(scores: Scores) -> list[str]:
    if scores.sweep:
        origin = f"measured by `merger sweep` in `{scores.sweep}` (candidate `{scores.candidate}`)"
    else:
        origin = "measured by `merger eval`" + (f" (`{scores.source}`)" if scores.source else "")
    items = {
        "report": "These items are disjoint from the ones this model was selected on.",
        "eval": "These items were not used to select this model.",
        "select": "These are the items this model was selected on, so they are biased upwards (winner's curse).",
    }[scores.items]
    lines = [
        "## Evaluation",
        "",
        f"Quick-subset scores {origin} with lm-evaluation-harness's prompts and metrics, "
        f"on **{max(r.n for r in scores.tasks.values())} items per task**, not the full leaderboard run. "
        f"{items}",
        "",
        "| task | shots | metric | value | ± stderr | items |",
        "|---|---|---|---|---|---|",
    ]
    for task, r in scores.tasks.items():
        err = f"{r.stderr * 100:.2f}" if r.stderr is not None else "-"
        lines.append(f"| {task} | {r.num_fewshot} | {r.metric} | {r.value * 100:.2f} | {err} | {r.n} |")
    return lines + [""]


def _reproduce(model_dir: Path, refs: list[str], steps: list[TrainRun]) -> list[str]:
    """The commands that make this folder again: the merge (or the sweep), then each training step."""
    verbs = {"pretrain": "train", "sft": "train", "dpo": "dpo"}
    recipe = "merger_recipe.yaml" if (model_dir / "merger_recipe.yaml").exists() else "mergekit_config.yml"
    if refs and not steps:
        command = f"merger sweep {recipe} --out sweep   # or: merger merge {recipe} --out merged"
    else:
        commands = [f"merger merge {recipe} --out step-0"] if refs else []
        model = "step-0" if refs else steps[0].base_model
        for number, run in enumerate(steps, 1):
            commands.append(f"merger {verbs[run.kind]} {model} --data {run.data.source} --out step-{number}")
            model = f"step-{number}"
        command = " && \\\n  ".join(commands)
    return ["## Reproduce", "", "```bash", command, "```", ""]


def _coverage(r: TaskResult) -> str:
    whole = r.n_total is not None and r.n >= r.n_total
    return f"all {r.n} items" if whole else f"quick subset, {r.n} items"


def _result(task: str, r: TaskResult) -> dict[str, Any]:
    dataset = {
        "name": f"{r.title or task} ({r.num_fewshot}-shot)",
        "type": r.dataset or task,
        "split": r.split or "test",
        "args": {"num_few_shot": r.num_fewshot},
    }
    if r.dataset_config:
        dataset["config"] = r.dataset_config
    return {
        "task": {"type": "text-generation", "name": "Text Generation"},
        "dataset": dataset,
        "metrics": [
            {"type": r.metric.split(",")[0], "value": round(r.value * 100, 2), "name": f"{r.metric} ({_coverage(r)})"}
        ],
    }


def write_card(model_dir: Path, name: str | None = None, scores: Scores | None = None) -> list[str]:
    """Write README.md (and, given scores, merger_scores.json first); returns the warnings."""
    if scores is not None:
        atomic_write(Path(model_dir) / "merger_scores.json", scores.model_dump_json(indent=2) + "\n")
    text, warnings = build_card(model_dir, name)
    atomic_write(Path(model_dir) / "README.md", text)
    return warnings


def card(model_dir: Path, eval_summary: Path | None = None) -> list[str]:
    """`merger card`: a model folder's card, with a `merger eval --json` summary's scores when given."""
    model_dir = require_model_folder(model_dir, weights=False, tokenizer=False)
    scores = None
    if eval_summary is not None:
        try:
            summary = EvalSummary.model_validate_json(Path(eval_summary).read_text())
            scores = Scores.from_eval(summary, source=str(eval_summary))
        except (OSError, ValueError, KeyError, ValidationError) as exc:
            first = str(exc).splitlines()[0]
            raise UserError.one(
                str(eval_summary), "--scores", f"not a `merger eval --json` summary ({first})"
            ) from None
    return write_card(model_dir, scores=scores)
