"""The eval tasks' test documents as plain text: what preference data is checked against for contamination.

Each document's text is lm-eval's own decontamination query where the task defines one
(`doc_to_decontamination_query`), else its prompt followed by its choices or target.
"""

from __future__ import annotations

from merger.config.recipe import EvalSettings
from merger.core.errors import UserError
from merger.evaluate.evaluator import load_tasks
from merger.evaluate.mirror import data_dir, mirrored
from merger.evaluate.tasks import PRESETS, check_names, expand

DEFAULT_AGAINST = [p.task for p in PRESETS["openllm-v1"]]


def document_text(task, doc) -> str:
    query = task.config.doc_to_decontamination_query
    if task.config.should_decontaminate and query:
        try:
            return str(task.doc_to_decontamination_query(doc))
        except (SyntaxError, ValueError):  # lm-eval 0.4.13 literal_evals a rendered template: render it only
            from lm_eval.utils import apply_template

            return apply_template(query, doc)
    parts = [str(task.doc_to_text(doc))]
    choices = task.doc_to_choice(doc) if task.config.doc_to_choice is not None else None
    parts += [str(c) for c in choices] if choices else [str(task.doc_to_target(doc))]
    return " ".join(parts)


def reference_texts(
    tasks: list[str] | None, data: str | None, include_path: list[str] | None = None
) -> dict[str, list[tuple[str, str]]]:
    """task -> [(item id, the item's words)] for the named tasks; by default the openllm-v1 tasks whose data the
    data dir mirrors (none without a data dir, so nothing is fetched to check against)."""
    root = data_dir(data)
    if tasks:
        names = expand(check_names(tasks, include_path or [], "--against"))
    else:
        names = [n for n in DEFAULT_AGAINST if root is not None] if root else []
    settings = EvalSettings(
        tasks=names or ["merger_arithmetic"], data_dir=str(root) if root else None, include_path=include_path or []
    )
    texts: dict[str, list[tuple[str, str]]] = {}
    with mirrored(root):
        for name in names:
            try:
                loaded = load_tasks([name], settings)[name]
            except UserError:
                if tasks:
                    raise
                continue  # a default task whose data is not mirrored here
            texts[name] = [
                (f"{leaf}/{i}", document_text(task, doc))
                for leaf, task in loaded.items()
                for i, doc in enumerate(task.eval_docs)
            ]
    return texts
