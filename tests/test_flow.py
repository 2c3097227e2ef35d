"""The stage policy as data: the planner's steps, checked against a fake executor that records what it is leased
(nothing merged, trained or scored), the step kinds found as files, and the backends' registry."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from test_sweep import slerp_recipe, write
from typer.testing import CliRunner

from merger.cli import app
from merger.config.recipe import expand
from merger.flow import steps
from merger.flow.options import RunOptions
from merger.flow.steps.score import Scored
from merger.sweep.executors.base import Finished
from merger.sweep.plan import plan_sweep
from merger.sweep.run import Sweep
from merger.sweep.strategies.base import Fixed, Goal

runner = CliRunner()


class Recorder:
    """An executor that does nothing but record each step, write the folder a step makes, and say it finished."""

    slots = 1

    def __init__(self):
        self.leased: list[steps.Step] = []
        self.queue: list[steps.Step] = []

    def prefers(self, step):
        return True

    def submit(self, step):
        missing = [f for f in step.needs() if not (Path(f) / "config.json").exists()]
        assert not missing, f"{step.kind} of {step.journal_id} leased before {missing} was made"
        self.leased.append(step)
        self.queue.append(step)

    def events(self):
        step = self.queue.pop(0)
        if step.kind != "score":
            step.folder.mkdir(parents=True, exist_ok=True)
            (step.folder / "config.json").write_text("{}")
        outcome = Scored(weights="f" * 64 if getattr(step, "digest", False) else None)
        yield Finished(step, outcome, "recorder")

    def close(self):
        pass


def recorded(recipes: list[Path], out: Path, goals) -> tuple[Sweep, list[steps.Step]]:
    sweep = Sweep(plan_sweep(recipes), out, RunOptions("cpu"))
    sweep.executor.close()
    sweep.executor = recorder = Recorder()
    try:
        sweep.drive(Fixed(goals(sweep)))
    finally:
        sweep.close()
    return sweep, recorder.leased


def test_an_in_memory_candidate_is_scored_in_rungs_then_saved_against_its_digest(tiny_models, tmp_path):
    recipe = write(tmp_path / "r.yaml", slerp_recipe(tiny_models["a"], tiny_models["b"], 4, [0.3], eval={"limit": 8}))
    [c] = expand(recipe)
    rungs = lambda s: [Goal(c.id, offset=0, limit=4), Goal(c.id, offset=4, limit=4), Goal(c.id, kind="save")]  # noqa: E731
    _, leased = recorded([recipe], tmp_path / "out", rungs)
    assert [(s.kind, getattr(s, "folder", None)) for s in leased] == [
        ("score", None),
        ("score", None),
        ("save", tmp_path / "out" / "candidates" / c.id / "model"),
    ]
    assert [s.digest for s in leased[:2]] == [True, False], "the digest is taken once, at the first rung"
    assert leased[2].scored == "f" * 64, "the save is checked against the digest the first rung recorded"
    assert len({s.key for s in leased}) == 3 and leased[0].key == steps.kinds()["score"](**vars(leased[0])).key


def test_a_trained_candidate_is_merged_trained_then_scored_from_disk(tiny_models, tmp_path):
    data = write(tmp_path / "text.jsonl", "")
    data.write_text("\n".join(json.dumps({"text": f"row {i}"}) for i in range(4)) + "\n")
    recipe = write(
        tmp_path / "r.yaml",
        slerp_recipe(
            tiny_models["a"], tiny_models["b"], 4, [0.3], eval={"limit": 8}, train=[{"sft": {"data": str(data)}}]
        ),
    )
    [c] = expand(recipe)
    own = tmp_path / "out" / "candidates" / c.id
    sweep, leased = recorded([recipe], tmp_path / "out", lambda s: [Goal(c.id, limit=8), Goal(c.id, kind="save")])
    assert [(s.kind, s.stage) for s in leased[:2]] == [("merge", "merge"), ("train", "train-1-sft")]
    assert leased[2].kind == "score" and len(leased) == 3, "a trained candidate's model is already on disk: no save"
    assert leased[1].source == own / "merged" and leased[1].folder == own / "model"
    assert leased[2].folder == own / "model" and not leased[2].digest
    assert not (own / "merged").exists(), "a training step's own input goes once the journal has its output"


def test_a_merged_child_waits_for_its_inputs_saved_and_two_children_save_a_shared_input_once(tiny_models, tmp_path):
    """Stage 1 merges the stage before's best (in memory, never saved) with c at two t: the input is saved once,
    checked against the digest it was scored with, before either child is merged (and scored live)."""
    from merger.config.refine import merged_child

    data = slerp_recipe(tiny_models["a"], tiny_models["b"], 4, [0.3], eval={"limit": 8})
    stage = {"merge_method": "slerp", "base_model": "@candidate", "dtype": "float32", "parameters": {"t": 0.5}}
    stage["slices"] = [
        {"sources": [{"model": m, "layer_range": [0, 4]} for m in ("@candidate", str(tiny_models["c"]))]}
    ]
    data["refine"] = [{"top": 1, "merge": stage, "sweep": {"merge.parameters.t": [0.2, 0.8]}}]
    recipe = write(tmp_path / "r.yaml", data)
    [c] = expand(recipe)
    out = tmp_path / "out"
    folder = lambda cid: out / "candidates" / cid / "model"  # noqa: E731
    children = [merged_child(c, 1, {"merge.parameters.t": t}, [c], folder) for t in (0.2, 0.8)]

    def goals(sweep):
        for child in children:
            sweep.add([child])
        return [Goal(c.id, limit=8), *(Goal(child.id, limit=8) for child in children)]

    _, leased = recorded([recipe], out, goals)
    assert [(s.kind, s.journal_id) for s in leased] == [
        ("score", c.id),
        ("save", c.id),
        ("score", children[0].id),
        ("score", children[1].id),
    ]
    assert leased[1].scored == "f" * 64 and leased[2].folder is None and leased[2].needs() == [folder(c.id)]
    assert children[0].id != children[1].id and children[0].inputs == [c.id] == children[1].inputs


def test_a_backend_that_reads_folders_gets_a_save_first(tiny_models, tmp_path):
    recipe = write(
        tmp_path / "r.yaml",
        slerp_recipe(tiny_models["a"], tiny_models["b"], 4, [0.3], eval={"limit": 4, "backend": "hf"}),
    )
    [c] = expand(recipe)
    _, leased = recorded([recipe], tmp_path / "out", lambda s: [Goal(c.id, limit=4), Goal(c.id, kind="save")])
    assert [s.kind for s in leased] == ["save", "score"], "saved once, scored from its folder, not saved again"
    assert leased[1].folder == tmp_path / "out" / "candidates" / c.id / "model" and leased[0].scored is None
    assert plan_sweep([recipe]).stages == ["save -> eval"]


def test_step_kinds_are_the_files_of_the_package(tmp_path, monkeypatch):
    assert set(steps.kinds()) == {"upstream", "merge", "train", "score", "save"}
    (tmp_path / "probe.py").write_text(
        "from dataclasses import dataclass\n"
        "from merger.flow.steps.base import Outcome, Step\n\n\n"
        "@dataclass(frozen=True)\nclass Probe(Step):\n    kind = 'probe'\n\n"
        "    def run(self, workspace):\n        return Outcome()\n"
    )
    monkeypatch.setattr(steps, "__path__", [*steps.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "merger.flow.steps.probe", raising=False)
    assert steps.kinds()["probe"].__name__ == "Probe"


@pytest.mark.parametrize(
    ("backend", "cause"), [("nope", "'nope' is not a backend; there are: hf, merger, vllm"), ("vllm", "not installed")]
)
def test_a_backend_that_cannot_run_is_one_line_before_any_work(tiny_models, tmp_path, backend, cause):
    if backend == "vllm" and importlib.util.find_spec("vllm"):
        pytest.skip("vllm is installed here")
    recipe = write(
        tmp_path / "r.yaml", slerp_recipe(tiny_models["a"], tiny_models["b"], 4, [0.3], eval={"backend": backend})
    )
    for verb in (["validate", str(recipe)], ["sweep", str(recipe), "--out", str(tmp_path / "out")]):
        result = runner.invoke(app, verb)
        assert result.exit_code == 2, result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "eval.backend" in lines[0] and cause in lines[0], result.stderr
    assert not (tmp_path / "out" / "journal.sqlite").exists(), "refused before the journal is opened"


@pytest.mark.slow
def test_a_sweep_on_lm_evals_hf_backend_scores_what_merger_eval_hf_scores(tiny_models, tmp_path):
    """The planner saves each candidate before lm-eval's `hf` reads it; each item's value is the one `merger eval
    --backend hf` gives the kept folder on the same items."""
    from merger.config.recipe import EvalSettings
    from merger.evaluate.evaluator import evaluate_folder
    from merger.sweep.journal import Journal

    settings = {"tasks": ["merger_arithmetic"], "limit": 6, "backend": "hf"}
    recipe = write(tmp_path / "r.yaml", slerp_recipe(tiny_models["a"], tiny_models["b"], 4, [0.3, 0.7], eval=settings))
    out = tmp_path / "out"
    result = runner.invoke(app, ["sweep", str(recipe), "--out", str(out), "--device", "cpu", "--keep", "2"])
    assert result.exit_code == 0, result.output + result.stderr
    board = json.loads((out / "leaderboard.json").read_text())
    assert len(board) == 2
    journal = Journal(out)
    try:
        for row in board:
            report = evaluate_folder(out / "candidates" / row["id"] / "model", EvalSettings(**settings), device="cpu")
            theirs = {i.id: i.metrics[report.tasks[i.task].primary] for i in report.items}
            assert journal.item_values(row["id"], "select")["merger_arithmetic"] == theirs
            assert journal.done(row["id"], "save") and not journal.done(row["id"], "scored-weights")
    finally:
        journal.close()
