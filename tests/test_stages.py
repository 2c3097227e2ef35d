"""`refine:` stages that merge: a candidate merged again with its parent, the stage before's best or other models
(`@candidate`, `@parent`, `@topK`), and greedy soups; ids built over the inputs' ids, inputs saved first and kept
while a stage needs them, every merged child tested against its best input."""

import json
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_pipeline import STRING_ROWS
from test_sweep import BIN, kill_when, runner, slerp_recipe, stages, write

from merger.cli import app
from merger.config.recipe import Candidate, RefineStage
from merger.config.refine import soup as make_soup
from merger.core.digest import folder_digest
from merger.sweep.stages import soup as soup_stage


def slerp_with(first: str, second, t: float = 0.5, layers: int = 4) -> dict:
    """A SLERP of two models (names of earlier candidates allowed), `first` the base."""
    return {
        "merge_method": "slerp",
        "base_model": str(first),
        "dtype": "float32",
        "parameters": {"t": t},
        "slices": [{"sources": [{"model": str(m), "layer_range": [0, layers]} for m in (first, second)]}],
    }


def mergekit_multi(documents: list[dict], tmp_path: Path) -> Path:
    """mergekit-multi's output folder for these documents (the last one's merge)."""
    multi = tmp_path / "multi.yaml"
    multi.write_text(yaml.safe_dump_all(documents))
    subprocess.run(
        [str(BIN / "mergekit-multi"), str(multi), "--intermediate-dir", str(tmp_path / "inter"), "--out-path",
         str(tmp_path / "mk")],
        check=True, capture_output=True,
    )  # fmt: skip
    return tmp_path / "mk"


def scored_digest(out: Path, cid: str) -> str:
    """The digest of the weights a sweep scored for a candidate, from its journal."""
    db = sqlite3.connect(out / "journal.sqlite")
    query = "SELECT result FROM stages WHERE candidate=? AND stage='scored-weights'"
    return json.loads(db.execute(query, (cid,)).fetchone()[0])["digest"]


def two_level(tiny_models, ts=(0.4,), stage_ts=(0.3, 0.7), more=()):
    recipe = slerp_recipe(
        tiny_models["a"], tiny_models["b"], 4, list(ts), eval={"tasks": ["merger_arithmetic"], "limit": 8}
    )
    merge = slerp_with("@candidate", tiny_models["c"])
    recipe["refine"] = [{"top": 1, "merge": merge, "sweep": {"merge.parameters.t": list(stage_ts)}}, *more]
    return recipe


def test_each_fault_of_a_merge_stage_is_one_line_and_exit_2_before_any_work(tiny_models, tmp_path):
    recipe = two_level(tiny_models, ts=(0.3, 0.7))
    recipe["refine"] = [
        {"top": 1, "merge": slerp_with("@parent", "@candidate")},  # stage 1 refines candidates without parents
        {"top": 2, "merge": slerp_with("@candidate", "@top9")},  # the stage before makes 1
        {"top": 1, "merge": slerp_with("@self", tiny_models["c"])},  # not a name
        {"top": 1, "merge": slerp_with("@top1", "@top1")},  # a model with itself
        {"top": 2, "merge": slerp_with("@candidate", "@top1")},  # @candidate is @top1 for the best
    ]
    path = write(tmp_path / "r.yaml", recipe)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 5, result.stderr
    assert (
        "refine.0.merge.base_model: '@parent' resolves to nothing: stage 1 refines candidates that have no parent"
        in (result.stderr)
    )
    assert "'@top9' resolves to nothing: the stage before makes 1 candidate(s)" in result.stderr
    assert "refine.2.merge.base_model: '@self' is not a name of an earlier candidate" in result.stderr
    assert "refine.3.merge: merges @top1 with itself" in result.stderr
    assert "refine.4.merge: merges @candidate with @top1" in result.stderr
    result = runner.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 2 and not (tmp_path / "out" / "journal.sqlite").exists(), "refused before any work"
    bad = two_level(tiny_models)
    bad["refine"][0]["sweep"] = {"parameters.t": [0.2]}
    result = runner.invoke(app, ["validate", str(write(tmp_path / "bad.yaml", bad))])
    assert result.exit_code == 2 and "a stage's axes are paths under `merge.`" in result.stderr


def test_a_soup_adds_an_ingredient_that_helps_and_skips_one_that_hurts(tmp_path):
    """Synthetic item values with known answers: the best alone is right on half of 400 items; adding the second
    lifts the soup by 10 points (kept), adding the third drops it by 15 (skipped), adding the fourth changes nothing
    (kept: not shown worse)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2, 400).astype(float)
    zeros = np.flatnonzero(base == 0)
    better = base.copy()
    better[zeros[:40]] = 1
    worse = better.copy()
    worse[np.flatnonzero(better == 1)[:60]] = 0
    as_values = lambda column: {"t": {str(i): float(v) for i, v in enumerate(column)}}  # noqa: E731
    stage = RefineStage(top=4, soup=True)
    ingredients = [
        Candidate(
            id=f"c{k}", recipe_path="r.yaml", params={}, merge={"dtype": "float32"}, random_seed=0, refine=[stage]
        )
        for k in range(4)
    ]
    by_set = {
        ("c0", "c1"): better,  # helps
        ("c0", "c1", "c2"): worse,  # hurts
        ("c0", "c1", "c3"): better,  # as good as the soup so far
    }

    class Host:
        select = type("S", (), {"metric": "mean", "confidence": 0.95})()

        def __init__(self):
            self.values_of = {"c0": as_values(base)}
            self.tried: list[tuple[str, ...]] = []

        def score(self, made):
            [c] = made
            self.tried.append(tuple(c.inputs))
            self.values_of[c.id] = as_values(by_set[tuple(c.inputs)])

        def folder(self, cid):
            return tmp_path / cid

        def values(self, cid):
            return self.values_of[cid]

    host = Host()
    soup_stage.run(host, [ingredients], 1)
    assert host.tried == [("c0", "c1"), ("c0", "c1", "c2"), ("c0", "c1", "c3")]
    assert soup_stage.keeps(as_values(better), as_values(base), "mean", 0.95)
    assert not soup_stage.keeps(as_values(worse), as_values(better), "mean", 0.95)
    assert soup_stage.keeps(as_values(base), as_values(base), "mean", 0.95), "no difference: not shown worse"
    soup = make_soup(ingredients[:2], 1, "c0", lambda cid: tmp_path / cid)
    assert soup.parent == "c0" and soup.stage == 1 and soup.params == {"refine.0.soup": 2}
    assert soup.merge["merge_method"] == "linear" and [m["model"] for m in soup.merge["models"]] == [
        str(tmp_path / "c0"),
        str(tmp_path / "c1"),
    ]
    assert make_soup(ingredients[:2], 1, "c0", lambda cid: Path("/elsewhere") / cid).id == soup.id, "ids, not paths"


@pytest.mark.slow
def test_a_second_level_merge_equals_mergekit_multi_and_keep_1_keeps_what_a_stage_needs(tiny_models, tmp_path):
    """SLERP(a, b) then SLERP(that, c): the merged child's tensors equal mergekit-multi's on the same two documents.
    With --keep 1 the stage-0 merge is saved for the stage that merges it and only the winner is kept at the end; a
    soup stage added afterwards saves the pruned inputs again (checked against the weights scored) and redoes
    nothing else."""
    recipe = two_level(tiny_models)
    path = write(tmp_path / "r.yaml", recipe)
    out = tmp_path / "out"
    result = runner.invoke(app, ["sweep", str(path), "--out", str(out), "--device", "cpu", "--keep", "1"])
    assert result.exit_code == 0, result.output + result.stderr
    assert len(list((out / "candidates").iterdir())) == 1
    rows = json.loads((out / "leaderboard.json").read_text())
    [first] = [r for r in rows if r["stage"] == 0]
    children = {r["params"]["refine.0.merge.parameters.t"]: r for r in rows if r["stage"] == 1}
    assert set(children) == {0.3, 0.7}
    assert all(c["inputs"] == [first["id"]] and c["parent"] == first["id"] for c in children.values())
    first_doc = {"name": "first", **slerp_with(tiny_models["a"], tiny_models["b"], 0.4)}
    multi = mergekit_multi([first_doc, slerp_with("first", tiny_models["c"], 0.3)], tmp_path)
    assert scored_digest(out, children[0.3]["id"]) == folder_digest(multi), "mergekit-multi's tensors, bit for bit"
    winner = json.loads((out / "sweep.json").read_text())["decision"]["winner"]
    for child in children.values():
        assert child["beats_parent"] == (child["vs_parent"][0] > 0)
        assert child["beats_parent"] or winner != child["id"], "a merged child not shown better is never best"

    again = out
    done = stages(again)
    assert done[(first["id"], "save")] == ("done", 1), "the merged stage-0 candidate was saved for stage 1"
    recipe["refine"].append({"top": 2, "soup": True})
    write(path, recipe)
    result = runner.invoke(app, ["sweep", str(path), "--out", str(again), "--device", "cpu", "--keep", "1"])
    assert result.exit_code == 0, result.output + result.stderr
    after = stages(again)
    assert all(after[k] == v for k, v in done.items() if k[1] != "save"), "nothing scored again"
    soups = [r for r in json.loads((again / "leaderboard.json").read_text()) if r["stage"] == 2]
    assert len(soups) == 1 and sorted(soups[0]["inputs"]) == sorted(c["id"] for c in children.values())
    assert all(after[(c["id"], "save")][0] == "done" for c in children.values()), "pruned inputs saved again"


def test_a_second_level_merge_of_smollm2_equals_mergekit_multi(smollm2, smollm2_variant, tmp_path):
    """The same claim on the real model (30 layers, tied embeddings, its tokenizer): SLERP(model, sibling) at 0.4,
    then SLERP(that, model) at 0.3, scored in memory by the sweep, bit for bit mergekit-multi's folder."""
    recipe = slerp_recipe(smollm2, smollm2_variant, 30, [0.4], eval={"tasks": ["merger_arithmetic"], "limit": 4})
    recipe["refine"] = [{"top": 1, "merge": slerp_with("@candidate", smollm2, 0.3, layers=30)}]
    path, out = write(tmp_path / "r.yaml", recipe), tmp_path / "out"
    result = runner.invoke(app, ["sweep", str(path), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output + result.stderr
    [child] = [r for r in json.loads((out / "leaderboard.json").read_text()) if r["stage"] == 1]
    first = {"name": "first", **slerp_with(smollm2, smollm2_variant, 0.4, layers=30)}
    multi = mergekit_multi([first, slerp_with("first", smollm2, 0.3, layers=30)], tmp_path)
    assert scored_digest(out, child["id"]) == folder_digest(multi)


@pytest.mark.slow
def test_a_chain_killed_in_its_second_level_merge_and_in_the_dpo_after_it_resumes_to_the_same_leaderboard(
    tiny_models, tmp_path
):
    """Beagle's shape: a SLERP grid, its best SLERPed again with a third model, that merge refined with DPO. Killed
    inside the second-level merge, then inside the DPO, then run to the end: no finished stage is redone and the
    leaderboard is an uninterrupted run's."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in STRING_ROWS))
    dpo = {"top": 1, "train": [{"dpo": {"data": str(pairs), "max_steps": 2, "max_length": 64, "save_steps": 1}}]}
    recipe = two_level(tiny_models, ts=(0.3, 0.7), stage_ts=(0.5,), more=[dpo])
    path = write(tmp_path / "r.yaml", recipe)
    clean, out = tmp_path / "clean", tmp_path / "out"
    cmd = lambda folder: [str(BIN / "merger"), "sweep", str(path), "--out", str(folder), "--device", "cpu"]  # noqa: E731
    subprocess.run(cmd(clean), check=True, capture_output=True)
    rows = json.loads((clean / "leaderboard.json").read_text())
    merged = next(r["id"] for r in rows if r["stage"] == 1)
    kill_when(cmd(out), out, lambda k: k[0] == merged and k[1].startswith("eval-"))  # in the second-level merge
    in_dpo = lambda k: k[1] == "train-1-dpo"  # noqa: E731
    for resume in (lambda: kill_when(cmd(out), out, in_dpo), lambda: subprocess.run(cmd(out), check=True)):
        before = stages(out)
        resume()  # on to the DPO after it, killed there; then to the end
        after = stages(out)
        assert all(after[k] == v for k, v in before.items() if v[0] == "done"), "finished stages must not be redone"
    standing = lambda rows: [(r["id"], r["score"], r.get("parent"), r.get("beats_parent")) for r in rows]  # noqa: E731
    assert standing(json.loads((out / "leaderboard.json").read_text())) == standing(rows), "as if never killed"
    assert [r["stage"] for r in rows].count(2) == 1 and next(r for r in rows if r["stage"] == 2)["parent"] == merged
