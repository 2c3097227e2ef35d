"""A worker's workspace: each candidate merged once, each input read once, lm-eval's tasks built once, and the same
tensors and scores as work done from nothing."""

import pytest
from test_sweep import slerp_recipe, write

from merger.config.recipe import EvalSettings, expand
from merger.core.digest import folder_digest
from merger.evaluate.evaluator import evaluate, make_lm
from merger.flow.options import RunOptions
from merger.flow.workspace import Workspace
from merger.merge.run import merge_in_memory, merge_to_disk


def safetensors_bytes(folder) -> int:
    from safetensors import safe_open

    total = 0
    for path in folder.glob("*.safetensors"):
        with safe_open(path, framework="pt") as handle:
            for name in handle.keys():
                t = handle.get_tensor(name)
                total += t.numel() * t.element_size()
    return total


def test_resident_inputs_give_mergekits_tensors_and_are_read_once(tiny_models, tmp_path):
    recipe = write(tmp_path / "r.yaml", slerp_recipe(tiny_models["a"], tiny_models["b"], 4, [0.3, 0.7]))
    first, second = expand(recipe)
    workspace = Workspace(RunOptions("cpu"))
    for c in (first, second):
        model, _, digest = workspace.live(c, None, digest=True)
        merge_to_disk(c, tmp_path / c.id, device="cpu", quiet=True)
        assert digest == folder_digest(tmp_path / c.id), "resident inputs merge to mergekit-yaml's tensors"
    inputs = safetensors_bytes(tiny_models["a"]) + safetensors_bytes(tiny_models["b"])
    assert workspace.counters.merges == 2
    assert workspace.counters.input_bytes_read <= inputs, "each input tensor read from disk once, for both merges"
    assert workspace.resident.bytes_read > 0
    # a merge without the workspace is not served the kept tensors (mergekit's own loaders are given back)
    assert merge_in_memory(second, device="cpu").digest == folder_digest(tmp_path / second.id)


def test_a_live_candidate_is_merged_once_and_tasks_built_once(tiny_models, tmp_path):
    recipe = write(tmp_path / "r.yaml", slerp_recipe(tiny_models["a"], tiny_models["b"], 4, [0.3]))
    [c] = expand(recipe)
    settings = EvalSettings(tasks=["merger_arithmetic"], limit=12)
    workspace = Workspace(RunOptions("cpu"))
    slices = []
    for offset, limit in ((0, 4), (4, 8)):
        model, tokenizer, _ = workspace.live(c, None, digest=False)
        lm = make_lm(settings, model, tokenizer, encoders=workspace.encoders)
        prepared = workspace.tasks(settings)
        slices += evaluate(lm, settings, limit=limit, offset=offset, prepared=prepared, show_progress=False).items
    assert workspace.counters.merges == 1 and workspace.counters.task_builds == 1
    fresh = merge_in_memory(c, device="cpu", digest=False)  # each slice from nothing, as before workspaces
    again = []
    for offset, limit in ((0, 4), (4, 8)):
        lm = make_lm(settings, fresh.model, fresh.tokenizer)
        again += evaluate(lm, settings, limit=limit, offset=offset, show_progress=False).items
    assert [(i.id, i.lls, i.metrics) for i in slices] == [(i.id, i.lls, i.metrics) for i in again]


@pytest.mark.slow
def test_report_on_a_sweep_killed_before_it_finished(tiny_models, tmp_path, monkeypatch):
    """`merger report` reads the journal alone: a sweep stopped midway gives its leaderboard so far."""
    from typer.testing import CliRunner

    from merger.cli import app
    from merger.sweep.run import Sweep

    recipe = write(
        tmp_path / "r.yaml",
        slerp_recipe(
            tiny_models["a"], tiny_models["b"], 4, [0.0, 0.5, 1.0], eval={"tasks": ["merger_arithmetic"], "limit": 8}
        ),
    )
    record, seen = Sweep.record, []

    def killed_after_two(self, event):
        record(self, event)
        seen.append(event.step.stage)
        if sum(stage.startswith("eval-") for stage in seen) == 2:
            raise KeyboardInterrupt  # as a kill would, before the third candidate and before sweep.json

    monkeypatch.setattr(Sweep, "record", killed_after_two)
    out = tmp_path / "sweep"
    CliRunner().invoke(app, ["sweep", str(recipe), "--out", str(out), "--device", "cpu"])
    assert not (out / "sweep.json").exists()
    result = CliRunner().invoke(app, ["report", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output + result.stderr
    import json

    rows = json.loads((out / "leaderboard.json").read_text())
    assert len(rows) == 2 and all(r["n_items"] == 8 for r in rows)
    assert "Leaderboard" in (out / "leaderboard.md").read_text()
