"""Parent post-stratification: strata and weights from both parents' whole files, the estimate a hand computation
gives, an empty stratum falling back to the plain mean, and a halving sweep that decides by it only when the
per-item cache holds both parents' whole files."""

import json
import sqlite3

import pytest
from test_sweep import runner, slerp_recipe, write

from merger.cli import app
from merger.sweep.strata import Strata, stratum


def test_strata_and_the_estimate_by_hand():
    # parents on 8 items: both right on 0-1, only A on 2-3, only B on 4-5, neither on 6-7 ... and 8 more where both
    # are right, so W = (neither 2, only B 2, only A 2, both 10) / 16
    a = {"t": {str(i): float(i < 4 or i >= 8) for i in range(16)}}
    b = {"t": {str(i): float(i < 2 or 4 <= i < 6 or i >= 8) for i in range(16)}}
    strata = Strata.from_parents(a, b)
    assert [stratum(1, 1), stratum(1, 0), stratum(0, 1), stratum(0, 0)] == [3, 2, 1, 0]
    assert strata.weights["t"] == [2 / 16, 2 / 16, 2 / 16, 10 / 16]
    # a candidate scored on items 0, 2, 4, 6 (one per stratum): right on 0 and 2 only
    values = {"t": {"0": 1.0, "2": 1.0, "4": 0.0, "6": 0.0}}
    assert strata.score(values, "mean") == pytest.approx(10 / 16 * 1 + 2 / 16 * 1 + 2 / 16 * 0 + 2 / 16 * 0)
    # only items of the "both right" stratum scored: the others fall back to the plain mean (1.0 here)
    assert strata.score({"t": {"0": 1.0, "1": 1.0}}, "mean") == pytest.approx(1.0)
    partial = {"t": {"0": 1.0, "1": 0.0}}  # plain mean 0.5, and every empty stratum takes it
    assert strata.score(partial, "mean") == pytest.approx(0.5)
    # a parent scored on any items is estimated at its whole-file score exactly, once every stratum has an item
    assert strata.score({"t": {k: a["t"][k] for k in ("0", "2", "4", "6")}}, "mean") == pytest.approx(12 / 16)


@pytest.mark.slow
def test_a_halving_sweep_decides_on_the_parents_strata_only_when_both_whole_files_are_cached(tiny_models, tmp_path):
    recipe = slerp_recipe(
        tiny_models["a"],
        tiny_models["b"],
        4,
        [0.2, 0.4, 0.6, 0.8],
        eval={"tasks": ["merger_arithmetic"], "num_fewshot": 0},
        select={"strategy": "halving", "budget": 0.2},
    )
    path = write(tmp_path / "r.yaml", recipe)
    sweep = ["sweep", str(path), "--device", "cpu"]
    result = runner.invoke(app, [*sweep, "--out", str(tmp_path / "plain")])
    assert result.exit_code == 0, result.output + result.stderr
    meta = sqlite3.connect(tmp_path / "plain" / "journal.sqlite").execute("SELECT value FROM meta WHERE key='strata'")
    assert json.loads(meta.fetchone()[0]) == {}, "no parents' whole files cached: the plain mean decides"
    for parent in ("a", "b"):  # each parent's whole file, scored once (as `merger eval` or an earlier sweep would)
        args = ["eval", str(tiny_models[parent]), "--tasks", "merger_arithmetic", "--num-fewshot", "0"]
        assert runner.invoke(app, [*args, "--device", "cpu"]).exit_code == 0
    result = runner.invoke(app, [*sweep, "--out", str(tmp_path / "strata")])
    assert result.exit_code == 0, result.output + result.stderr
    out = tmp_path / "strata"
    meta = sqlite3.connect(out / "journal.sqlite").execute("SELECT value FROM meta WHERE key='strata'")
    strata = json.loads(meta.fetchone()[0])
    assert (
        sum(strata["weights"]["merger_arithmetic"]) == pytest.approx(1.0)
        and len(strata["of"]["merger_arithmetic"]) == 500
    )
    decision = json.loads((out / "sweep.json").read_text())["decision"]
    assert decision["rule"] == "halving on the parents' strata"
    rows = json.loads((out / "leaderboard.json").read_text())
    assert all(r["estimate"] is not None for r in rows)
    assert "Decided on the parents' strata" in (out / "leaderboard.md").read_text()
    plain = json.loads((tmp_path / "plain" / "sweep.json").read_text())["decision"]
    assert decision["items_scored"] == plain["items_scored"], "the parents' files are not paid for in the budget"
