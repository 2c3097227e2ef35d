"""`merger sweep`: journal, resume after SIGKILL, selection, halving, keep-best, reports."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import HUB, REPO
from typer.testing import CliRunner

from merger.cli import app

runner = CliRunner()
BIN = Path(sys.executable).parent


def slerp_recipe(a, b, layers, ts, **sections):
    """A SLERP t grid between two tiny models; every candidate on every item (`strategy: grid`) unless the test's
    `select:` says otherwise: tiny sweeps are too small for the default budget's halving."""
    sections["select"] = {"strategy": "grid", **sections.get("select", {})}
    return {
        "merge": {
            "merge_method": "slerp",
            "base_model": str(a),
            "dtype": "float32",
            "parameters": {"t": 0.5},
            "slices": [
                {
                    "sources": [
                        {"model": str(a), "layer_range": [0, layers]},
                        {"model": str(b), "layer_range": [0, layers]},
                    ]
                }
            ],
        },
        "sweep": {"merge.parameters.t": ts},
        **sections,
    }


def write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def stages(out: Path) -> dict[tuple[str, str], tuple[str, int]]:
    db = sqlite3.connect(out / "journal.sqlite")
    return {
        (c, s): (status, runs) for c, s, status, runs in db.execute("SELECT candidate, stage, status, runs FROM stages")
    }


def kill_when(cmd, out, running) -> tuple[str, str]:
    """Run a sweep and SIGKILL it as soon as a stage `running` picks is running; that stage."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline, killed_in = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:
        try:
            found = stages(out) if (out / "journal.sqlite").exists() else {}
        except sqlite3.Error:
            found = {}
        hit = [k for k, (status, _) in found.items() if status == "running" and running(k)]
        if hit:
            proc.send_signal(signal.SIGKILL)
            killed_in = hit[0]
            break
        time.sleep(0.01)
    proc.wait()
    assert killed_in is not None, "the sweep finished before it could be interrupted there"
    return killed_in


def sweep(*args):
    result = runner.invoke(app, ["sweep", *map(str, args), "--device", "cpu"])
    assert result.exit_code == 0, result.output + result.stderr
    return result


@pytest.mark.slow
def test_grid_sweep_resumes_without_redoing(tiny_models, tmp_path):
    recipe = write(
        tmp_path / "r.yaml",
        slerp_recipe(
            tiny_models["a"],
            tiny_models["b"],
            4,
            [0.0, 0.5, 1.0],
            eval={"tasks": ["merger_arithmetic"], "limit": 10},
            select={"keep": 2, "report_items": 6, "signal": "auto"},
        ),
    )
    out = tmp_path / "sweep"
    result = sweep(recipe, "--out", out)
    assert "(by prob" in result.output and ("best " in result.output or "undecided" in result.output)
    first = stages(out)
    assert all(status == "done" and runs == 1 for status, runs in first.values())
    rows = json.loads((out / "leaderboard.json").read_text())
    assert len(rows) == 3 and {"id", "recipe", "params", "score", "ci", "tied_with_best", "tasks"} <= set(rows[0])
    assert rows[0]["ci"][0] <= rows[0]["score"] <= rows[0]["ci"][1]
    assert rows[0]["reported"]["n_items"] == 6, "the winner is reported on items it was not selected on"
    assert [r["signal"] for r in rows] == sorted((r["signal"] for r in rows), reverse=True), "ranked by p_gold"
    assert all(0 < r["signal"] < 1 for r in rows) and rows[0]["signal"] not in (r["score"] for r in rows)
    assert sorted(p.name for p in (out / "candidates").iterdir()) == sorted(r["id"] for r in rows[:2])
    assert (out / "best" / "model.safetensors").exists() and (out / "report.png").stat().st_size > 1000
    assert "Leaderboard" in (out / "leaderboard.md").read_text()

    sweep(recipe, "--out", out)
    assert stages(out) == first, "a rerun redoes nothing"

    # A changed recipe gives new candidates; the old results stay in the journal, untouched.
    changed = write(
        tmp_path / "r.yaml",
        slerp_recipe(tiny_models["a"], tiny_models["b"], 4, [0.25], eval={"tasks": ["merger_arithmetic"], "limit": 10}),
    )
    sweep(changed, "--out", out)
    after = stages(out)
    assert all(after[k] == v for k, v in first.items()) and len({c for c, _ in after}) == 4

    # Other eval settings are another yardstick: refused, not mixed in; --fresh starts over.
    other = write(
        tmp_path / "other.yaml",
        slerp_recipe(tiny_models["a"], tiny_models["b"], 4, [0.25], eval={"tasks": ["merger_arithmetic"], "limit": 12}),
    )
    result = runner.invoke(app, ["sweep", str(other), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 2 and "scored with other `eval:` settings" in result.stderr
    assert stages(out) == after

    (out / "leaderboard.md").unlink()
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    assert (out / "leaderboard.md").exists()

    # A sweep written before merger recorded signals: items without one, sweep.json without the new settings.
    db = sqlite3.connect(out / "journal.sqlite")
    db.execute("ALTER TABLE items DROP COLUMN signal")
    db.commit()
    db.close()
    meta = json.loads((out / "sweep.json").read_text())
    meta.pop("decision")
    for key in ("race", "confidence", "delta"):
        meta["select"].pop(key)
    meta["select"]["signal"] = "auto"  # asked of a journal whose items have none: decided by the metric, said once
    (out / "sweep.json").write_text(json.dumps(meta))
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    assert "(by metric" in result.output and result.output.count("no gold-choice probability") == 1


@pytest.mark.slow
def test_halving_promotes_the_best_fraction(tiny_models, tmp_path):
    recipe = write(
        tmp_path / "r.yaml",
        slerp_recipe(
            tiny_models["a"],
            tiny_models["b"],
            4,
            [0.0, 0.25, 0.5, 0.75],
            eval={"tasks": ["merger_arithmetic"], "limit": 16},
            select={"strategy": "halving", "budget": 0.75},
        ),
    )
    out = tmp_path / "sweep"
    sweep(recipe, "--out", out)
    items = sorted(r["n_items"] for r in json.loads((out / "leaderboard.json").read_text()))
    assert items == [8, 8, 16, 16], "4 x 16 x 0.75 = 48 = 4 x 8 + 2 x 8: 4 candidates on 8 items, the better 2 on 16"
    db = sqlite3.connect(out / "journal.sqlite")  # each candidate merged once for all its rungs, tasks built once
    merges = dict(db.execute("SELECT candidate, SUM(merges) FROM work WHERE stage LIKE 'eval-%' GROUP BY candidate"))
    rungs = dict(db.execute("SELECT candidate, COUNT(*) FROM work WHERE stage LIKE 'eval-%' GROUP BY candidate"))
    assert sorted(rungs.values()) == [1, 1, 2, 2] and set(merges.values()) == {1}
    assert db.execute("SELECT SUM(task_builds) FROM work").fetchone()[0] == 1
    assert json.loads(db.execute("SELECT value FROM meta WHERE key='race_candidates'").fetchone()[0]) == 4
    # the replay (scripts/bench_selection.py) on this journal's items, in its seeded order, picks as the sweep did
    sys.path.insert(0, str(REPO / "scripts"))
    from bench_selection import replay

    from merger.config.recipe import SelectSettings

    values: dict = {}
    prob: dict = {}
    positions: dict = {}
    for cid, task, item, value, p_gold, position in db.execute(
        "SELECT candidate, task, item, value, signal, position FROM items WHERE split='select' ORDER BY position"
    ):
        values.setdefault(cid, {}).setdefault(task, {})[item] = value
        prob.setdefault(cid, {}).setdefault(task, {})[item] = p_gold
        positions.setdefault(task, {})[item] = position
    orders = {t: sorted(found, key=found.get) for t, found in positions.items()}
    sizes = json.loads(db.execute("SELECT value FROM meta WHERE key='task_sizes'").fetchone()[0])
    ranking, _, counted = replay(values, prob, orders, 16, SelectSettings(strategy="halving", budget=0.75), sizes, 1234)
    board = json.loads((out / "leaderboard.json").read_text())
    assert ranking == [r["id"] for r in board] and {r["id"]: r["n_items"] for r in board} == counted


def test_lock_stops_a_second_sweep(tiny_models, tmp_path):
    from merger.sweep.journal import Journal

    recipe = write(tmp_path / "r.yaml", slerp_recipe(tiny_models["a"], tiny_models["b"], 4, [0.5]))
    holder = Journal(tmp_path / "sweep")
    try:
        result = runner.invoke(app, ["sweep", str(recipe), "--out", str(tmp_path / "sweep")])
        assert result.exit_code == 2 and "another sweep is writing this journal" in result.stderr
    finally:
        holder.close()


def test_bad_select_metric(tiny_models, tmp_path):
    recipe = write(
        tmp_path / "r.yaml", slerp_recipe(tiny_models["a"], tiny_models["b"], 4, [0.5], select={"metric": "hellaswag"})
    )
    result = runner.invoke(app, ["sweep", str(recipe), "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "select.metric" in result.stderr


def test_dry_run_plans_without_work(tiny_models, tmp_path):
    recipe = write(tmp_path / "r.yaml", slerp_recipe(tiny_models["a"], tiny_models["b"], 4, [0.1, 0.9]))
    result = sweep(recipe, "--out", tmp_path / "s", "--dry-run")
    assert "select: mean, grid, keep 1" in result.stdout and "memory" in result.stdout
    assert not (tmp_path / "s").exists()


def test_one_yardstick_for_memory_and_disk(tiny_models, tmp_path):
    """A float16 merge scored live and the same merge read from disk (as a refined or kept candidate is) are scored
    in the same dtype, to the same log-likelihoods; the digest stays that of the merged float16 tensors."""
    import torch

    from merger.config.recipe import EvalSettings, expand
    from merger.core.digest import folder_digest
    from merger.evaluate.evaluator import evaluate, make_lm
    from merger.flow.options import RunOptions
    from merger.flow.workspace import Workspace
    from merger.merge.run import merge_to_disk

    data = slerp_recipe(tiny_models["a"], tiny_models["b"], 4, [0.3])
    data["merge"]["dtype"] = "float16"
    [candidate] = expand(write(tmp_path / "r.yaml", data))
    merge_to_disk(candidate, tmp_path / "disk", device="cpu", quiet=True)
    settings = EvalSettings(tasks=["merger_arithmetic"], limit=4)
    scored = []
    for folder in (None, tmp_path / "disk"):
        model, tokenizer, digest = Workspace(RunOptions("cpu")).live(candidate, folder, digest=True)
        assert model.dtype == torch.float32
        scored.append(
            [i.lls for i in evaluate(make_lm(settings, model, tokenizer), settings, show_progress=False).items]
        )
        if folder is None:
            assert digest == folder_digest(tmp_path / "disk")
    assert scored[0] == scored[1]


def test_in_memory_scores_equal_write_then_load(smollm2, smollm2_variant, tmp_path):
    from merger.config.recipe import EvalSettings, expand
    from merger.evaluate.evaluator import evaluate, make_lm
    from merger.evaluate.model import load_model
    from merger.merge.run import merge_in_memory, merge_to_disk

    [candidate] = expand(write(tmp_path / "r.yaml", slerp_recipe(smollm2, smollm2_variant, 30, [0.3])))
    live = merge_in_memory(candidate)[:2]
    merge_to_disk(candidate, tmp_path / "disk", quiet=True)
    loaded = load_model(tmp_path / "disk", "cpu")
    settings = EvalSettings(tasks=["arc_challenge", "merger_arithmetic"], limit=6, data_dir=str(HUB), num_fewshot=0)
    a = evaluate(make_lm(settings, *live), settings, show_progress=False)
    b = evaluate(make_lm(settings, *loaded), settings, show_progress=False)
    # Same tensors bit for bit; the two copies differ only in memory layout, which moves float32 sums by ~1e-6.
    for x, y in zip(a.items, b.items):
        assert max(abs(p - q) for p, q in zip(x.lls, y.lls)) < 1e-4
        assert x.metrics == y.metrics
    assert a.tasks == b.tasks or all(a.tasks[t].metrics == b.tasks[t].metrics for t in a.tasks)


def test_smollm2_solar_chain_survives_sigkill(smollm2, smollm2_variant, tmp_path):
    """A SLERP t grid beside the SOLAR demo recipe (up-scale -> continued pretraining -> SFT -> DPO, plus a second
    DPO step: stepwise DPO), its steps shortened; killed inside continued pretraining after a checkpoint, then run
    again: no finished stage is redone, the killed step resumes from its checkpoint, and every step's output carries
    the chain."""
    recipe = yaml.safe_load((REPO / "merge_recipes" / "demo-smollm2-solar.yaml").read_text())
    recipe["depth_upscale"]["model"] = str(smollm2)
    pretrain, sft, dpo = (step[kind] for step, kind in zip(recipe["train"], ("pretrain", "sft", "dpo")))
    for settings in (pretrain, sft, dpo):
        settings["data"] = str((REPO / settings["data"]).resolve())
        settings.update(max_steps=2, save_steps=1, max_length=128, batch_size=2)
    pretrain.update(heldout=str((REPO / pretrain["heldout"]).resolve()), heldout_texts=4, max_steps=4)
    recipe["train"].append({"dpo": {**dpo, "beta": 0.2}})  # stepwise DPO: its reference is the first DPO's output
    recipe["eval"] = evals = {"tasks": ["merger_arithmetic"], "limit": 6}
    solar = write(tmp_path / "solar.yaml", recipe)
    slerp = write(tmp_path / "slerp.yaml", slerp_recipe(smollm2, smollm2_variant, 30, [0.2, 0.8], eval=evals))
    out = tmp_path / "sweep"
    cmd = [str(BIN / "merger"), "sweep", str(slerp), str(solar), "--out", str(out), "--device", "cpu", "--keep", "3"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline, killed_in = time.time() + 600, None
    while time.time() < deadline and proc.poll() is None:
        if list((out / "candidates").glob("*/.step-1.train-work-*/checkpoints/checkpoint-2/trainer_state.json")):
            try:
                found = stages(out)
            except sqlite3.Error:
                found = {}
            killed_in = next((k for k, (status, _) in found.items() if status == "running"), None)
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.2)
    proc.wait()
    assert killed_in is not None and killed_in[1] == "train-1-pretrain", killed_in
    before = stages(out)
    finished = {k for k, (status, _) in before.items() if status == "done"}
    assert (killed_in[0], "merge") in finished

    subprocess.run(cmd, check=True, capture_output=True)
    after = stages(out)
    assert all(after[k] == before[k] for k in finished), "finished stages must not be redone"
    assert after[killed_in] == ("done", 2), "the interrupted stage is redone once"
    assert all(status == "done" for status, _ in after.values())
    chain = [s for c, s in after if c == killed_in[0] and s.startswith("train-")]
    assert sorted(chain) == ["train-1-pretrain", "train-2-sft", "train-3-dpo", "train-4-dpo"]
    rows = json.loads((out / "leaderboard.json").read_text())
    assert len(rows) == 3 and all(r["n_items"] == 6 for r in rows)
    model = out / "candidates" / killed_in[0] / "model"
    history = json.loads((model / "merger_train.json").read_text())
    assert [h["kind"] for h in history] == ["pretrain", "sft", "dpo", "dpo"]
    assert history[0]["resumed_from"] == 2 and history[0]["steps"] == 4
    assert history[0]["teacher"] == str(smollm2) and history[0]["perplexity"]["before"] > 0
    steps = [str(out / "candidates" / killed_in[0] / f"step-{n}") for n in (2, 3)]
    assert [h["base_model"] for h in history[2:]] == steps, "each step trains the last; DPO's reference is its input"
    assert not (model.parent / "merged").exists() and not (model.parent / "step-1").exists()
    assert json.loads((model / "config.json").read_text())["num_hidden_layers"] == 44


@pytest.mark.slow
def test_fresh_starts_over_but_never_under_a_running_sweep(tiny_models, tmp_path):
    from merger.sweep.journal import Journal

    recipe = write(
        tmp_path / "r.yaml",
        slerp_recipe(tiny_models["a"], tiny_models["b"], 4, [0.5], eval={"tasks": ["merger_arithmetic"], "limit": 4}),
    )
    out = tmp_path / "sweep"
    sweep(recipe, "--out", out)
    before = stages(out)
    holder = Journal(out)
    try:
        result = runner.invoke(app, ["sweep", str(recipe), "--out", str(out), "--fresh"])
        assert result.exit_code == 2 and "another sweep is writing this journal" in result.stderr
        assert stages(out) == before, "the running sweep's journal is untouched"
    finally:
        holder.close()

    def started():
        return dict(sqlite3.connect(out / "journal.sqlite").execute("SELECT stage, started FROM stages").fetchall())

    first = started()
    sweep(recipe, "--out", out, "--fresh")
    assert stages(out).keys() == before.keys() and all(runs == 1 for _, runs in stages(out).values())
    assert all(started()[stage] > first[stage] for stage in first), "every stage was run again"


def test_smollm2_sweep_over_openllm_v1_and_a_v2_group(smollm2, smollm2_variant, tmp_path):
    """Any lm-eval task in a sweep: the v1 preset plus lm-eval's leaderboard_bbh group, offline from the hub mirror;
    the card's model-index matches the journal's report items."""
    evals = {
        "tasks": ["openllm-v1", "leaderboard_bbh"],
        "limit": 2,
        "num_fewshot": {"winogrande": 0},  # the mirror has no Winogrande train split to draw shots from
        "gen_kwargs": {"max_gen_toks": 24},
        "data_dir": str(HUB),
    }
    recipe = write(
        tmp_path / "r.yaml", slerp_recipe(smollm2, smollm2_variant, 30, [0.5], eval=evals, select={"report_items": 2})
    )
    result = runner.invoke(app, ["sweep", str(recipe), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output + result.stderr
    board = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    tasks = ["arc_challenge", "hellaswag", "mmlu", "truthfulqa_mc2", "winogrande", "gsm8k", "leaderboard_bbh"]
    assert sorted(board[0]["tasks"]) == sorted(tasks) and board[0]["n_items"] == 2 * len(tasks)
    card = yaml.safe_load((tmp_path / "out" / "best" / "README.md").read_text().split("---")[1])
    results = {r["dataset"]["type"]: r for r in card["model-index"][0]["results"]}
    assert results["allenai/ai2_arc"]["dataset"]["args"]["num_few_shot"] == 25
    assert results["openai/gsm8k"]["metrics"][0]["type"] == "exact_match"
    reported = board[0]["reported"]["tasks"]
    assert results["allenai/ai2_arc"]["metrics"][0]["value"] == round(reported["arc_challenge"] * 100, 2)
    assert results["SaylorTwift/bbh"]["metrics"][0]["value"] == round(reported["leaderboard_bbh"] * 100, 2)


def test_a_unit_whose_worker_always_dies_stops_after_bounded_retries(tiny_models, tmp_path, monkeypatch):
    from merger.sweep.executors.base import Lost
    from merger.sweep.executors.local import LocalExecutor

    def always_dies(self):
        yield Lost(self.queue.popleft(), "w1", "killed by the host's OOM killer")

    monkeypatch.setattr(LocalExecutor, "events", always_dies)
    recipe = write(tmp_path / "r.yaml", slerp_recipe(tiny_models["a"], tiny_models["b"], 4, [0.5]))
    result = runner.invoke(app, ["sweep", str(recipe), "--out", str(tmp_path / "s"), "--device", "cpu"])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.output + result.stderr
    assert "its worker died 3 times, the last time: killed by the host's OOM killer" in errors[0]
    assert result.stderr.count("is leased again") == 2
