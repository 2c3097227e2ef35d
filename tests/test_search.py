"""`search:`: spaces parse and bad ones are refused; racing stops a clearly worse trial; a search killed mid-trial
resumes with the same proposals; the winner's reported items are disjoint from every item the search saw."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_sweep import slerp_recipe, sweep, write
from typer.testing import CliRunner

from merger.cli import app
from merger.config.recipe import Points
from merger.sweep.journal import Journal
from merger.sweep.racing import Racing
from merger.sweep.strategies import search

pytest.importorskip("optuna")
BIN = Path(sys.executable).parent


def search_recipe(tiny_models, tmp_path, space=None, **settings):
    data = slerp_recipe(
        tiny_models["a"],
        tiny_models["b"],
        4,
        [0.5],
        eval={"tasks": ["merger_arithmetic"], "limit": 8},
        select={"report_items": 4},
    )
    data["merge"]["parameters"] = {"t": [{"filter": "self_attn", "value": [0.2, 0.5, 0.8]}, {"value": 0.5}]}
    del data["sweep"]
    data["search"] = {
        "sampler": "tpe",
        "trials": 6,
        "seed": 3,
        "space": space
        or {
            "merge.parameters.t.0.value.1": {"low": 0.0, "high": 1.0},
            "merge.parameters.t.1.value": {"low": 0.0, "high": 1.0, "step": 0.25},
            "merge.dtype": {"choices": ["float32", "bfloat16"]},
        },
        **settings,
    }
    return write(tmp_path / "search.yaml", data)


def test_a_space_parses(tiny_models, tmp_path):
    path = search_recipe(tiny_models, tmp_path)
    points = Points(path)
    space, point = points.space, points.at
    assert space["merge.parameters.t.1.value"].step == 0.25 and space["merge.dtype"].choices == ["float32", "bfloat16"]
    c = point({"merge.parameters.t.0.value.1": 0.9, "merge.dtype": "bfloat16"})
    assert c.merge["parameters"]["t"][0]["value"] == [0.2, 0.9, 0.8] and c.merge["dtype"] == "bfloat16"
    assert c.params == {"merge.parameters.t.0.value.1": 0.9, "merge.dtype": "bfloat16"}
    assert c.id != point({"merge.parameters.t.0.value.1": 0.8}).id, "a point is its content hash"


@pytest.mark.parametrize(
    "space, message",
    [
        ({"merge.parameters.t.1.value": {"low": 1.0, "high": 0.0}}, "low 1 is above high 0"),
        ({"merge.parameters.nope.value": {"low": 0.0, "high": 1.0}}, "does not exist in the recipe"),
        ({"merge.merge_method": {"low": 0.0, "high": 1.0}}, 'a range needs a number, and the recipe has "slerp"'),
        ({"merge.parameters.t.5.value": {"low": 0.0, "high": 1.0}}, "index 5 is outside a list of 2"),
        ({"merge.parameters.t.1.value": {"low": 0.1, "high": 1.0, "log": True, "step": 0.1}}, "no step"),
        ({"merge.parameters.t.1.value": {"choices": []}}, "at least 1 item"),
    ],
)
def test_bad_spaces_are_one_line(tiny_models, tmp_path, space, message):
    path = search_recipe(tiny_models, tmp_path, space=space)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output + result.stderr
    lines = [line for line in result.stderr.splitlines() if message in line]
    assert len(lines) == 1 and "search.space" in lines[0] and str(path) in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("pruner", ["paired", "halving"])
def test_racing_stops_a_clearly_worse_trial_early(tiny_models, tmp_path, pruner):
    """Trials whose point is on the wrong side score 0 on every item, the others 1: once a trial has been scored on
    every item, a clearly worse one is stopped as soon as the anytime-valid test can tell (23 items at 95% shared by
    7 comparisons with 8 trials: after the 32-item slice), and the items it did not need are counted."""
    path = search_recipe(
        tiny_models, tmp_path, space={"merge.parameters.t.1.value": {"low": 0.0, "high": 1.0}}, trials=8, min_items=4
    )
    path.write_text(path.read_text().replace("limit: 8", "limit: 64"))
    reached: dict[str, int] = {}
    good: dict[str, bool] = {}

    def values(cid, below):
        n = min(reached.get(cid, 0), below if below is not None else 64)
        return {"task": {f"{i:03d}": float(good[cid]) for i in range(n)}} if n else {}

    def propose(params):
        c = Points(path).at(params)
        good[c.id] = params["merge.parameters.t.1.value"] < 0.5
        return c

    from merger.config.recipe import SearchSettings

    settings = SearchSettings.model_validate(
        {"trials": 8, "seed": 5, "sampler": "random", "min_items": 4, "pruner": pruner, "space": Points(path).space}
    )
    journal = Journal(tmp_path / "journal")
    racing = Racing("mean", 0.95, 1.0, settings.trials)
    strategy = search.Search(settings, Points(path).space, 64, "mean", propose, values, journal, racing)
    while not strategy.finished():
        for goal in strategy.ask(1):
            reached[goal.cid] = goal.offset + goal.limit
            strategy.tell(goal)
    summary = strategy.summary()
    rows = journal.trials()
    assert summary.trials == 8 and len(rows) == 8
    assert summary.items_saved == sum(64 - r.items for r in rows)
    assert all(good[r.candidate] for r in rows if r.state == "complete"), "no worse trial runs to the end..."
    assert summary.pruned and all(not good[r.candidate] and r.items < 64 for r in rows if r.state == "pruned")
    if pruner == "paired":  # ... and once a trial has run to the end, a worse one stops as soon as it can be told
        leader_at = next(i for i, r in enumerate(rows) if r.state == "complete")
        later_bad = [r for r in rows[leader_at + 1 :] if not good[r.candidate]]
        assert later_bad and all(r.state == "pruned" and r.items == 32 for r in later_bad)
    journal.close()


def _trials(out: Path) -> list[tuple[int, str, str, str | None]]:
    db = sqlite3.connect(out / "journal.sqlite")
    return [tuple(r) for r in db.execute("SELECT number, candidate, params, state FROM trials ORDER BY number")]


@pytest.mark.slow
def test_a_killed_search_resumes_with_the_same_proposals(tiny_models, tmp_path):
    path = search_recipe(tiny_models, tmp_path, pruner="none")
    sweep(path, "--out", tmp_path / "whole")
    whole = _trials(tmp_path / "whole")
    assert len(whole) == 6 and all(state == "complete" for *_, state in whole)

    out = tmp_path / "killed"
    cmd = [str(BIN / "merger"), "sweep", str(path), "--out", str(out), "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline, killed = time.time() + 300, False
    while time.time() < deadline and proc.poll() is None:
        try:
            found = _trials(out) if (out / "journal.sqlite").exists() else []
        except sqlite3.Error:
            found = []
        if sum(state is not None for *_, state in found) >= 2 and any(state is None for *_, state in found):
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.02)
    proc.wait()
    assert killed, "the search finished before it could be killed mid-trial"
    sweep(path, "--out", out)
    assert _trials(out) == whole, "the same proposals, in the same order, with the same outcomes"
    board = json.loads((out / "leaderboard.json").read_text())
    assert [(r["id"], r["score"]) for r in board] == [
        (r["id"], r["score"]) for r in json.loads((tmp_path / "whole" / "leaderboard.json").read_text())
    ]

    # The winner's published score: on items no trial was scored or chosen on.
    db = sqlite3.connect(out / "journal.sqlite")
    seen = {item for (item,) in db.execute("SELECT item FROM items WHERE split='select'")}
    reported = {item for (item,) in db.execute("SELECT item FROM items WHERE split='report'")}
    assert len(reported) == 4 and not reported & seen
    assert board[0]["reported"]["n_items"] == 4
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["search"]["trials"] == 6 and len(meta["search"]["order"]) == 6
    assert "6 trials" in (out / "leaderboard.md").read_text()
    assert (out / "report.png").stat().st_size > 1000


def test_a_search_needs_report_items(tiny_models, tmp_path):
    path = search_recipe(tiny_models, tmp_path)
    path.write_text(path.read_text().replace("report_items: 4", "keep: 1"))
    result = CliRunner().invoke(app, ["sweep", str(path), "--out", str(tmp_path / "o"), "--dry-run"])
    assert result.exit_code == 2, result.output + result.stderr
    assert "select.report_items: a search needs report items" in result.stderr
