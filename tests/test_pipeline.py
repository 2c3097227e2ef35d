"""`refine:` stages: a sweep's best candidates trained further into children, scored on the same items, each tested
against its parent; a child not shown better than its parent is never kept."""

import json
import sqlite3
import subprocess

import numpy as np
import pytest
from test_sweep import BIN, kill_when, slerp_recipe, stages, sweep, write

from merger.sweep.racing import Racing
from merger.sweep.selection import versus_parents

STRING_ROWS = [
    {"prompt": f"What is {a} plus {b}?", "chosen": f"{a} plus {b} is {a + b}.", "rejected": f"It is {a * b + 7}."}
    for a, b in [(2, 3), (4, 5), (6, 7), (8, 9), (3, 3), (5, 2)]
]


def test_a_child_is_kept_only_when_shown_better_than_its_parent():
    """Synthetic items with known answers: a child that wins 30 more items of 200 is shown better; one identical to
    its parent, or worse, is not; the error is split over the comparisons."""
    rng = np.random.default_rng(0)
    parent = {"t": {str(i): float(v) for i, v in enumerate(rng.integers(0, 2, 200))}}
    better = {"t": dict(parent["t"])}
    flipped = [i for i, v in parent["t"].items() if v == 0][:30]
    better["t"].update(dict.fromkeys(flipped, 1.0))
    worse = {"t": {i: 0.0 for i in parent["t"]}}
    values = {"p": parent, "better": better, "same": parent, "worse": worse}
    gaps = versus_parents(values, {"better": "p", "same": "p", "worse": "p"}, Racing("mean", 0.95, 1.0, 4))
    assert gaps["better"][0] > 0 and gaps["same"][0] <= 0 <= gaps["same"][1] and gaps["worse"][1] < 0
    assert gaps["better"][0] < 0.15 < gaps["better"][1]


@pytest.mark.slow
def test_a_pipeline_refines_the_top_two_and_resumes_after_sigkill(tiny_models, tmp_path):
    """A SLERP grid of 5, the top 2 refined with DPO: DPO runs exactly twice (killed once and rerun, the stage it
    died in redone once), children are scored on their parents' items and tested against them, and the rerun ends
    with the same leaderboard."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in STRING_ROWS))
    refine = [{"top": 2, "train": [{"dpo": {"data": str(pairs), "max_steps": 2, "max_length": 64, "save_steps": 1}}]}]
    recipe = slerp_recipe(
        tiny_models["a"],
        tiny_models["b"],
        4,
        [0.0, 0.25, 0.5, 0.75, 1.0],
        eval={"tasks": ["merger_arithmetic"], "limit": 12},
        refine=refine,
    )
    path = write(tmp_path / "pipeline.yaml", recipe)
    out = tmp_path / "sweep"
    cmd = [str(BIN / "merger"), "sweep", str(path), "--out", str(out), "--device", "cpu"]
    clean = tmp_path / "clean"
    subprocess.run([*cmd[:2], str(path), "--out", str(clean), "--device", "cpu"], check=True, capture_output=True)
    dry = subprocess.run([*cmd, "--dry-run"], capture_output=True, text=True, check=True)
    assert "then stage 1: the top 2 trained (dpo) into 2 children" in dry.stdout
    assert "each child scored on its parent's items (12 items per task)" in " ".join(dry.stdout.split())
    killed_in = kill_when(cmd, out, lambda k: k[1] == "train-1-dpo")
    before = stages(out)
    finished = {k for k, (status, _) in before.items() if status == "done"}
    subprocess.run(cmd, check=True, capture_output=True)
    after = stages(out)
    assert all(after[k] == before[k] for k in finished), "finished stages must not be redone"
    dpo = {k: v for k, v in after.items() if k[1] == "train-1-dpo"}
    assert len(dpo) == 2 and dpo[killed_in] == ("done", 2) and all(s == "done" for s, _ in dpo.values())

    rows = json.loads((out / "leaderboard.json").read_text())
    parents = [r for r in rows if r["stage"] == 0]
    children = [r for r in rows if r["stage"] == 1]
    assert len(parents) == 5 and len(children) == 2
    top2 = [r["id"] for r in parents][:2]  # the two best of the grid, on the same items
    assert sorted(c["parent"] for c in children) == sorted(top2)
    assert all(c["train"] == ["dpo"] and c["n_items"] == 12 and c["vs_parent"] is not None for c in children)
    for c in children:
        assert c["beats_parent"] == (c["vs_parent"][0] > 0)
    best = json.loads((out / "sweep.json").read_text())["decision"]["winner"]
    assert best not in [c["id"] for c in children if not c["beats_parent"]], "a child no better than its parent"
    history = out / "best" / "merger_train.json"
    assert history.exists() == any(c["beats_parent"] and c["id"] == best for c in children)

    standing = lambda rows: [(r["id"], r["score"], r.get("parent"), r.get("beats_parent")) for r in rows]  # noqa: E731
    assert standing(rows) == standing(json.loads((clean / "leaderboard.json").read_text())), "as if never killed"
    subprocess.run(cmd, check=True, capture_output=True)  # a finished pipeline: nothing to do, same leaderboard
    assert stages(out) == after
    assert json.loads((out / "leaderboard.json").read_text()) == rows


@pytest.mark.slow
def test_input_models_are_scored_as_reference_rows_never_kept(tiny_models, tmp_path):
    """`select.references`: the merges' inputs scored as they are on the same items; the SLERP at t=0 is its base
    model, item for item; neither input is ever best or kept."""
    recipe = slerp_recipe(
        tiny_models["a"],
        tiny_models["b"],
        4,
        [0.0, 0.5],
        eval={"tasks": ["merger_arithmetic"], "limit": 8},
        select={"references": True, "keep": 3},
    )
    path = write(tmp_path / "refs.yaml", recipe)
    out = tmp_path / "sweep"
    subprocess.run([str(BIN / "merger"), "sweep", str(path), "--out", str(out), "--device", "cpu"], check=True)
    rows = json.loads((out / "leaderboard.json").read_text())
    inputs = {r["reference"]: r for r in rows if r.get("reference")}
    assert set(inputs) == {str(tiny_models["a"]), str(tiny_models["b"])}
    base = next(r for r in rows if r.get("params", {}).get("merge.parameters.t") == 0.0)
    assert inputs[str(tiny_models["a"])]["tasks"] == base["tasks"] and inputs[str(tiny_models["a"])]["n_items"] == 8
    best = json.loads((out / "sweep.json").read_text())["decision"]["winner"]
    assert best not in [r["id"] for r in inputs.values()]
    kept = {p.name for p in (out / "candidates").iterdir()}
    assert kept and not kept & {r["id"] for r in inputs.values()}
    assert "input model" in (out / "leaderboard.md").read_text()
    # another sweep over the same inputs: the reference rows come from the per-item cache, no item scored again
    again = tmp_path / "again"
    sweep(path, "--out", again)
    db = sqlite3.connect(again / "journal.sqlite")
    refs = [r["id"] for r in inputs.values()]
    work = db.execute(
        "SELECT SUM(items_scored), SUM(items_cached), SUM(scoring_s) FROM work WHERE candidate IN (?, ?) "
        "AND stage LIKE 'eval-%'",
        refs,
    ).fetchone()
    assert work == (0, 16, 0.0), "0 forward passes for the inputs"
    assert json.loads((again / "leaderboard.json").read_text()) == rows
